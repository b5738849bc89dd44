import NIOCore

/// Follows one side's TLS records across reads, however the stream is cut, to find an alert in clear (a record
/// of type 21 and exactly two octets, ``TLSHello/alert(_:)``) wherever it starts: looking only at the start of
/// each read found one or not depending on how the octets arrived.
public struct TLSRecordWalker: Sendable, Equatable {
    /// Octets of the current record's body still to pass over.
    private var remaining = 0
    /// The current record's first octets (at most 7: a header and an alert's two), oldest in the high bits.
    private var header: UInt64 = 0
    private var headerCount = 0

    public init() {}

    /// Walks `buffer`'s readable octets; returns the first alert in clear that they complete, and how many of
    /// them lead up to its last octet (where a note of it belongs, however the stream was cut).
    public mutating func walk(_ buffer: ByteBuffer) -> (fatal: Bool, name: String, end: Int)? {
        let view = buffer.readableBytesView
        var found: (fatal: Bool, name: String, end: Int)?
        var index = view.startIndex
        while index < view.endIndex {
            if self.remaining > 0 {
                let skip = min(self.remaining, view.endIndex - index)
                index += skip
                self.remaining -= skip
                continue
            }
            self.header = self.header << 8 | UInt64(view[index])
            self.headerCount += 1
            index += 1
            if self.headerCount == 5 {
                let type = UInt8(truncatingIfNeeded: self.header >> 32)
                let length = Int(self.header & 0xFFFF)
                // An alert's two octets are read with its header; any other record is passed over.
                if type == 0x15, length == 2 { continue }
                self.remaining = length
                (self.header, self.headerCount) = (0, 0)
            } else if self.headerCount == 7 {
                let octets = (0..<7).map { UInt8(truncatingIfNeeded: self.header >> (8 * (6 - $0))) }
                if found == nil, let alert = TLSHello.alert(octets) {
                    found = (alert.fatal, alert.name, index - view.startIndex)
                }
                (self.header, self.headerCount) = (0, 0)
            }
        }
        return found
    }
}
