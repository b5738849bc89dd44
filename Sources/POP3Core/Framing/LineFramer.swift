import struct NIOCore.ByteBuffer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Splits a byte stream into lines, with a bound on their length.
///
/// Lines end with CRLF; a bare LF also ends a line and is reported (R1). A line longer than `limit`
/// octets (line ending included) is reported as `.tooLong` when it finally ends; meanwhile only its
/// first `limit` octets are kept, so memory stays bounded whatever the peer sends.
public struct LineFramer: Sendable {
    public enum Ending: Sendable, Hashable {
        case crlf
        /// A bare LF (R1).
        case lf
    }

    public enum Frame: Sendable, Hashable {
        /// A whole line; `content` holds no line ending.
        case line(ByteBuffer, Ending)
        /// A line longer than the limit: its first octets and its whole length, line ending included.
        case tooLong(prefix: ByteBuffer, octets: Int)
    }

    /// The longest line accepted, line ending included. May change between lines.
    public var limit: Int
    private var partial: ByteBuffer
    /// Octets of an over-long line seen so far; nil while the current line is within the limit.
    private var overflow: Int?

    public init(limit: Int) {
        self.limit = limit
        self.partial = ByteBuffer()
        self.overflow = nil
    }

    /// Octets held back waiting for the end of a line.
    public var bufferedOctets: Int { self.partial.readableBytes }

    /// Takes the next line from `input`, or consumes all of it and returns nil when no line ends in it.
    /// `holdingPartial`: a line that has not ended and is still within the limit is left in `input` instead,
    /// so that a relay can pass each line on as one slice of what it read.
    public mutating func next(from input: inout ByteBuffer, holdingPartial: Bool = false) -> Frame? {
        guard input.readableBytes > 0 else { return nil }
        let newline = input.withUnsafeReadableBytes { raw -> Int? in
            guard let base = raw.baseAddress, let hit = memchr(base, 0x0A, raw.count) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
        guard let newline else {
            if holdingPartial, self.overflow == nil, self.partial.readableBytes + input.readableBytes < self.limit {
                return nil
            }
            self.absorb(input.readSlice(length: input.readableBytes)!)
            return nil
        }
        var piece = input.readSlice(length: newline)!
        input.moveReaderIndex(forwardBy: 1)

        if let seen = self.overflow {
            let octets = seen + piece.readableBytes + 1
            self.overflow = nil
            let prefix = self.partial
            self.partial.clear()
            return .tooLong(prefix: prefix, octets: octets)
        }
        var line: ByteBuffer
        if self.partial.readableBytes > 0 {
            self.partial.writeBuffer(&piece)
            line = self.partial
            self.partial = ByteBuffer()
        } else {
            line = piece
        }
        let octets = line.readableBytes + 1
        if octets > self.limit {
            return .tooLong(prefix: line.getSlice(at: line.readerIndex, length: self.limit) ?? line, octets: octets)
        }
        if line.readableBytes > 0, line.getInteger(at: line.writerIndex - 1, as: UInt8.self) == 0x0D {
            line.moveWriterIndex(to: line.writerIndex - 1)
            return .line(line, .crlf)
        }
        return .line(line, .lf)
    }

    private mutating func absorb(_ piece: ByteBuffer) {
        var piece = piece
        if let seen = self.overflow {
            self.overflow = seen + piece.readableBytes
            return
        }
        self.partial.writeBuffer(&piece)
        // A partial line of `limit` octets cannot end within the limit: its LF would be one more.
        if self.partial.readableBytes >= self.limit {
            self.overflow = self.partial.readableBytes
            self.partial.moveWriterIndex(to: self.partial.readerIndex + self.limit)
        }
    }

    /// Drops a partial line, as after a gap in a capture.
    public mutating func reset() {
        self.partial.clear()
        self.overflow = nil
    }

    /// What is left of an unfinished line, for a report at close.
    public var pendingOctets: Int { self.overflow ?? self.partial.readableBytes }
}
