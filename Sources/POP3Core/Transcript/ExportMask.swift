import struct NIOCore.ByteBuffer

/// Same-length masks for exports that keep the bytes' shape (the relay's pcap files): a secret's octets
/// become `*`, so lengths, sequence numbers and everything around the secret stay as they were.
public enum ExportMask {
    public static let octet: UInt8 = 0x2A

    /// A client line (without its ending) with any password, APOP digest or SASL payload masked.
    /// `saslResponse`: the line answers a SASL challenge, so all of it is a secret but a cancelling `*`.
    public static func commandLine(_ content: ByteBuffer, saslResponse: Bool) -> ByteBuffer {
        let bytes = content.readableBytesView
        if saslResponse {
            if bytes.elementsEqual([Self.octet]) { return content }
            return Self.masked(content, 0..<bytes.count)
        }
        guard let range = CommandParser.parse(bytes).secretRange, !range.isEmpty else { return content }
        return Self.masked(content, range)
    }

    static func masked(_ content: ByteBuffer, _ range: Range<Int>) -> ByteBuffer {
        var copy = content
        let start = copy.readerIndex
        for offset in range {
            copy.setInteger(Self.octet, at: start + offset)
        }
        return copy
    }

    /// Masks the text of SASL challenges (`+ text` lines) in server bytes that come in pieces.
    public struct Challenges: Sendable {
        private var atLineStart = true
        private var inChallenge = false
        /// The line began with "+": a space makes it a challenge.
        private var afterPlus = false

        public init() {}

        /// Call while a SASL exchange is open; between exchanges, call `reset()`.
        public mutating func mask(_ bytes: ByteBuffer) -> ByteBuffer {
            var copy = bytes
            let start = copy.readerIndex
            for index in 0..<copy.readableBytes {
                let byte = copy.getInteger(at: start + index, as: UInt8.self)!
                if byte == 0x0A || byte == 0x0D {
                    self.inChallenge = false
                    self.afterPlus = false
                    self.atLineStart = byte == 0x0A
                    continue
                }
                if self.inChallenge {
                    copy.setInteger(ExportMask.octet, at: start + index)
                } else if self.atLineStart {
                    self.afterPlus = byte == 0x2B
                } else if self.afterPlus {
                    self.afterPlus = false
                    self.inChallenge = byte == 0x20
                }
                self.atLineStart = false
            }
            return copy
        }

        public mutating func reset() {
            self = Challenges()
        }
    }
}
