import CPOP3Scan

import struct NIOCore.ByteBuffer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Scans the body of a multi-line reply without copying it (RFC 1939 §3).
///
/// It finds the terminating `.` CRLF, counts lines, byte-stuffed lines (`..`), lines that should have
/// been stuffed (`.x`, R7), bare LF endings (R1), the header/body boundary (for TOP, R24) and 8-bit
/// octets in the headers (R47). Content is handed back as slices of the input.
public struct BodyScanner: Sendable {
    private enum Phase: Sendable {
        case lineStart
        /// A `.` began the line; `pending` octets are not yet known to be content or the terminator.
        case dot
        case dotCR
        case inLine
    }

    private var phase: Phase = .lineStart
    private var pending = 0
    private var pendingFromEarlierChunk = 0
    private var lastByteWasCR = false
    private var eightBitInLine = false

    /// Octets of the body as sent (stuffing included, terminator excluded).
    public private(set) var octets = 0
    public private(set) var lines = 0
    /// Lines that began with `..` on the wire.
    public private(set) var stuffedLines = 0
    /// Lines that began with a single `.` and something else (R7).
    public private(set) var unstuffedLines = 0
    public private(set) var bareLineEndings = 0
    public private(set) var headerLines = 0
    /// Lines after the blank line that ends the headers.
    public private(set) var bodyLines = 0
    public private(set) var inHeaders = true
    public private(set) var eightBitHeaderLines = 0
    public private(set) var finished = false
    /// The terminator was `.` and a bare LF (R6).
    public private(set) var bareTerminator = false

    public init() {}

    /// Octets of the message once un-stuffed (RFC 1939 §3), which is what LIST and STAT count.
    public var messageOctets: Int { self.octets - self.stuffedLines }

    /// Consumes body octets from `input`, up to and including the terminator if it is there.
    /// Returns the octets that are certainly content (a slice of the input where possible).
    public mutating func scan(_ input: inout ByteBuffer) -> ByteBuffer? {
        let count = input.readableBytes
        guard count > 0, !self.finished else { return nil }
        var resolvedPrefix = 0
        var contentEnd = count
        var consumed = count

        input.withUnsafeReadableBytes { raw in
            let p = raw.bindMemory(to: UInt8.self)
            var i = 0
            var pendingStart = 0
            while i < count {
                switch self.phase {
                case .lineStart:
                    let b = p[i]
                    if b == 0x2E {
                        self.phase = .dot
                        self.pending = 1
                        self.pendingFromEarlierChunk = 0
                        pendingStart = i
                        i += 1
                        continue
                    }
                    self.startLine(empty: b == 0x0D || b == 0x0A)
                    self.phase = .inLine
                    self.lastByteWasCR = false

                case .dot:
                    let b = p[i]
                    if b == 0x0D {
                        self.phase = .dotCR
                        self.pending += 1
                        i += 1
                    } else if b == 0x0A {
                        self.bareTerminator = true
                        self.finish(at: i, pendingStart: pendingStart, contentEnd: &contentEnd, consumed: &consumed)
                        return
                    } else {
                        if b == 0x2E { self.stuffedLines += 1 } else { self.unstuffedLines += 1 }
                        resolvedPrefix += self.resolvePending()
                        self.startLine(empty: false)
                        self.phase = .inLine
                        self.lastByteWasCR = false
                    }

                case .dotCR:
                    if p[i] == 0x0A {
                        self.finish(at: i, pendingStart: pendingStart, contentEnd: &contentEnd, consumed: &consumed)
                        return
                    }
                    // ".\r" then something else: content with a bare CR in it.
                    self.unstuffedLines += 1
                    resolvedPrefix += self.resolvePending()
                    self.startLine(empty: false)
                    self.phase = .inLine
                    self.lastByteWasCR = false

                case .inLine:
                    if !self.inHeaders, i > 0, count - i > Self.blockWidth {
                        let (end, lineCount) = Self.plainLines(raw, from: i, count: count)
                        if end > i {
                            // Every line these blocks ended was CRLF-terminated and the next one began with no dot.
                            self.lines += lineCount
                            self.bodyLines += lineCount
                            self.lastByteWasCR = p[end - 1] == 0x0D
                            i = end
                            continue
                        }
                    }
                    let base = raw.baseAddress! + i
                    if let hit = memchr(base, 0x0A, count - i) {
                        let j = i + base.distance(to: UnsafeRawPointer(hit))
                        let crBefore = j > i ? p[j - 1] == 0x0D : self.lastByteWasCR
                        if !crBefore { self.bareLineEndings += 1 }
                        if self.inHeaders, !self.eightBitInLine, self.has8Bit(p, i, j) { self.eightBitHeaderLines += 1 }
                        self.eightBitInLine = false
                        self.lines += 1
                        self.phase = .lineStart
                        i = j + 1
                    } else {
                        // A line that goes on in the next chunk is counted once.
                        if self.inHeaders, !self.eightBitInLine, self.has8Bit(p, i, count) {
                            self.eightBitHeaderLines += 1
                            self.eightBitInLine = true
                        }
                        self.lastByteWasCR = p[count - 1] == 0x0D
                        i = count
                    }
                }
            }
            // The chunk ended with a `.` or `.\r` still undecided: hold it back.
            if self.phase == .dot || self.phase == .dotCR {
                let inThisChunk = self.pending - self.pendingFromEarlierChunk
                contentEnd = count - inThisChunk
                self.pendingFromEarlierChunk = self.pending
            }
        }

        var content = input.readSlice(length: contentEnd)!
        input.moveReaderIndex(forwardBy: consumed - contentEnd)
        if resolvedPrefix > 0 {
            var joined = ByteBuffer()
            joined.writeInteger(UInt8(0x2E))
            if resolvedPrefix > 1 { joined.writeInteger(UInt8(0x0D)) }
            joined.writeBuffer(&content)
            content = joined
        }
        self.octets += content.readableBytes
        return content.readableBytes > 0 ? content : nil
    }

    private mutating func finish(at i: Int, pendingStart: Int, contentEnd: inout Int, consumed: inout Int) {
        // When the terminator began in an earlier chunk, none of this chunk is content.
        contentEnd = self.pendingFromEarlierChunk > 0 ? 0 : pendingStart
        consumed = i + 1
        self.finished = true
        self.pending = 0
        self.pendingFromEarlierChunk = 0
    }

    /// The pending `.` (and CR) turned out to be content. Returns how many of them came in an earlier chunk.
    private mutating func resolvePending() -> Int {
        let earlier = self.pendingFromEarlierChunk
        self.pending = 0
        self.pendingFromEarlierChunk = 0
        return earlier
    }

    private mutating func startLine(empty: Bool) {
        if self.inHeaders {
            if empty { self.inHeaders = false } else { self.headerLines += 1 }
        } else {
            self.bodyLines += 1
        }
    }

    static let blockWidth = 16

    /// The fast path through the body of a message: from `start` (inside a line, past the chunk's first
    /// octet), whole blocks in which every LF has a CR before it and no dot after it, the common case
    /// (AVX2 or SSE2, in CPOP3Scan). Returns where it stopped (at a block boundary, still inside a line) and
    /// how many lines ended. A block with anything else is left to the octet-by-octet path.
    private static func plainLines(_ raw: UnsafeRawBufferPointer, from start: Int, count: Int) -> (Int, Int) {
        var lines = 0
        let end = pop3_plain_lines(raw.baseAddress!.assumingMemoryBound(to: UInt8.self), start, count, &lines)
        return (end, lines)
    }

    private func has8Bit(_ p: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int) -> Bool {
        var i = from
        while i < to {
            if p[i] >= 0x80 { return true }
            i += 1
        }
        return false
    }
}
