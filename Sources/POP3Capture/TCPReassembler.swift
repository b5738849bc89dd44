import NIOCore

/// Puts one direction of a TCP connection back in order (RFC 9293 sequence numbers).
///
/// Out-of-order segments wait until the hole before them fills; retransmissions and overlaps are
/// dropped (the first copy wins, and a different second copy counts as a conflict); a hole that never
/// fills is reported as a gap of so many octets, so the reader after it knows something is missing.
/// Waiting data is bounded: past `limit` octets the oldest hole is given up as a gap.
public struct TCPReassembler: Sendable {
    public enum Output: Sendable, Equatable {
        case data(ByteBuffer)
        case gap(Int)
    }

    public let limit: Int
    /// Sequence number of the next octet expected; nil until the first segment or SYN.
    private var next: UInt32?
    /// Segments beyond a hole, by their distance from `next`'s origin.
    private var waiting: [(start: Int64, bytes: ByteBuffer)] = []
    /// Octets held beyond holes, waiting.
    public private(set) var waitingOctets = 0
    /// Octets delivered so far (the stream offset of `next`).
    private var delivered: Int64 = 0
    /// Where the FIN is, once seen.
    private var finOffset: Int64?
    /// Acknowledgments past a hole still to come before it is given up.
    private var ackPatience = Self.patience
    static let patience = 4

    public private(set) var retransmissions = 0
    public private(set) var conflicts = 0
    public private(set) var gaps = 0
    public private(set) var limitHits = 0

    public init(limit: Int = 4 << 20) {
        self.limit = limit
    }

    /// A SYN: the stream starts at `sequence` + 1.
    public mutating func syn(_ sequence: UInt32) {
        guard self.next == nil else { return }
        self.next = sequence &+ 1
    }

    /// Where `sequence` falls in the stream, allowing for wrap-around.
    private func offset(_ sequence: UInt32) -> Int64 {
        self.delivered + Int64(Int32(bitPattern: sequence &- self.next!))
    }

    public mutating func segment(_ sequence: UInt32, _ payload: ByteBuffer) -> [Output] {
        var out: [Output] = []
        self.segment(sequence, payload, into: &out)
        return out
    }

    /// The common case, without a buffer of outputs: `length` octets at `sequence` are the next ones and
    /// nothing waits, so they are delivered as they are. Returns false when `segment` is to decide.
    public mutating func inOrder(_ sequence: UInt32, length: Int) -> Bool {
        guard length > 0, self.waiting.isEmpty, let next = self.next, next == sequence else { return false }
        self.advance(by: length)
        return true
    }

    /// Appends what `payload` makes ready to `out` (a buffer the caller reuses).
    public mutating func segment(_ sequence: UInt32, _ payload: ByteBuffer, into out: inout [Output]) {
        guard payload.readableBytes > 0 else { return }
        if self.next == nil {
            // Seen from the middle, or no handshake: start here.
            self.next = sequence
        }
        let start = self.offset(sequence)
        let end = start + Int64(payload.readableBytes)
        if end <= self.delivered {
            self.retransmissions += 1
            return
        }
        if start <= self.delivered {
            let skip = Int(self.delivered - start)
            if skip > 0 { self.retransmissions += 1 }
            self.emit(
                payload.getSlice(at: payload.readerIndex + skip, length: payload.readableBytes - skip)!,
                into: &out
            )
            self.drain(into: &out)
            return
        }
        self.store(start, payload)
        while self.waitingOctets > self.limit, let first = self.waiting.first {
            self.limitHits += 1
            self.skip(to: first.start, into: &out)
            self.drain(into: &out)
        }
    }

    /// The other side acknowledged everything before `acknowledgment`: octets of this stream up to there that
    /// the capture does not hold were sent and received, so they never will be seen. Such holes are given up
    /// now (as gaps), so that what follows is read in its turn with the other side's, not at the end.
    /// `now`: the acknowledging segment carries data of its own, which must be read after this stream's
    /// octets it acknowledges; a bare acknowledgment gives the capture a few more segments to show them.
    public mutating func acknowledged(_ acknowledgment: UInt32, now: Bool = false, into out: inout [Output]) {
        guard self.next != nil else { return }
        var acked = self.offset(acknowledgment)
        // The FIN takes a sequence number of its own and carries no octet.
        if let fin = self.finOffset { acked = min(acked, fin) }
        // A stale or wrapped acknowledgment is ignored; one far beyond what was seen is not believed either.
        guard acked > self.delivered, acked - self.delivered < 1 << 30 else {
            self.ackPatience = Self.patience
            return
        }
        // A capture can hold a segment after the acknowledgment of it (taken on another queue, or near the
        // sender): the hole is given up only when the peer has gone on acknowledging past it a few times.
        self.ackPatience -= 1
        guard now || self.ackPatience <= 0 else { return }
        self.ackPatience = Self.patience
        while self.delivered < acked {
            if let first = self.waiting.first, first.start <= acked {
                self.skip(to: first.start, into: &out)
                self.drain(into: &out)
            } else {
                self.skip(to: acked, into: &out)
                self.drain(into: &out)
                break
            }
        }
    }

    /// This direction's FIN, at `sequence` (the octet after its last).
    public mutating func fin(_ sequence: UInt32) {
        guard self.next != nil else { return }
        self.finOffset = self.offset(sequence)
    }

    /// Gives up the oldest hole (reported as a gap) and delivers what waited behind it: the capture as a whole
    /// holds too much. Returns false when nothing waits.
    @discardableResult
    public mutating func giveUpOldestHole(into out: inout [Output]) -> Bool {
        guard let first = self.waiting.first else { return false }
        self.limitHits += 1
        self.skip(to: first.start, into: &out)
        self.drain(into: &out)
        return true
    }

    /// The end of the capture or the connection: what still waits is delivered after gaps.
    public mutating func finish() -> [Output] {
        var out: [Output] = []
        while let first = self.waiting.first {
            self.skip(to: first.start, into: &out)
            self.drain(into: &out)
        }
        return out
    }

    private mutating func store(_ start: Int64, _ bytes: ByteBuffer) {
        if let same = self.waiting.firstIndex(where: { $0.start == start }) {
            let existing = self.waiting[same].bytes
            let common = min(existing.readableBytes, bytes.readableBytes)
            if existing.readableBytesView.prefix(common).elementsEqual(bytes.readableBytesView.prefix(common)) {
                self.retransmissions += 1
            } else {
                self.conflicts += 1
            }
            guard bytes.readableBytes > existing.readableBytes else { return }
            var longer = existing
            var tail = bytes.getSlice(at: bytes.readerIndex + common, length: bytes.readableBytes - common)!
            longer.writeBuffer(&tail)
            self.waiting[same].bytes = longer
            self.waitingOctets += bytes.readableBytes - existing.readableBytes
            return
        }
        let index = self.waiting.firstIndex { $0.start > start } ?? self.waiting.endIndex
        self.waiting.insert((start, bytes), at: index)
        self.waitingOctets += bytes.readableBytes
    }

    private mutating func skip(to start: Int64, into out: inout [Output]) {
        guard start > self.delivered else { return }
        let missing = Int(start - self.delivered)
        self.gaps += 1
        out.append(.gap(missing))
        self.advance(by: missing)
    }

    private mutating func drain(into out: inout [Output]) {
        while let first = self.waiting.first, first.start <= self.delivered {
            self.waiting.removeFirst()
            self.waitingOctets -= first.bytes.readableBytes
            let end = first.start + Int64(first.bytes.readableBytes)
            guard end > self.delivered else {
                self.retransmissions += 1
                continue
            }
            let skip = Int(self.delivered - first.start)
            self.emit(
                first.bytes.getSlice(at: first.bytes.readerIndex + skip, length: first.bytes.readableBytes - skip)!,
                into: &out
            )
        }
    }

    private mutating func emit(_ bytes: ByteBuffer, into out: inout [Output]) {
        guard bytes.readableBytes > 0 else { return }
        out.append(.data(bytes))
        self.advance(by: bytes.readableBytes)
    }

    private mutating func advance(by count: Int) {
        self.delivered += Int64(count)
        self.next = self.next! &+ UInt32(truncatingIfNeeded: count)
    }
}
