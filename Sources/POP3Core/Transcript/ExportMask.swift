import struct NIOCore.ByteBuffer

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Same-length masks for exports that keep the bytes' shape (the relay's pcap files): a secret's octets
/// become `*`, so lengths, sequence numbers and everything around the secret stay as they were.
public enum ExportMask {
    public static let octet: UInt8 = 0x2A

    /// A client line (without its ending) with any password, APOP digest or SASL payload masked, keeping the
    /// syntax of what it hides so that the export reads back as cleanly as the session did: an APOP digest
    /// becomes 32 zeros, a base64 SASL payload the base64 of as many `x` (its NULs kept, so PLAIN's shape
    /// stays); a password, or a payload that is not base64, becomes as many `*`.
    /// `saslResponse`: the line answers a SASL challenge, so all of it is a secret but a cancelling `*`.
    public static func commandLine(_ content: ByteBuffer, saslResponse: Bool) -> ByteBuffer {
        let bytes = content.readableBytesView
        if saslResponse {
            if bytes.elementsEqual([Self.octet]) { return content }
            return Self.saslPayload(content, 0..<bytes.count)
        }
        let parsed = CommandParser.parse(bytes)
        guard let range = parsed.secretRange, !range.isEmpty else { return content }
        switch parsed.command {
        case .apop?:
            let digest = bytes.dropFirst(range.lowerBound).prefix(range.count)
            guard range.count == 32, digest.allSatisfy(CommandParser.isLowerHex) else {
                return Self.masked(content, range)
            }
            return Self.replaced(content, range, with: Array(repeating: UInt8(ascii: "0"), count: 32))
        case .auth?:
            return Self.saslPayload(content, range)
        default:
            return Self.masked(content, range)
        }
    }

    /// A base64 SASL payload as the base64 of as many `x`, NULs kept; anything else as `*`. `=` (an empty
    /// initial response) is no secret.
    static func saslPayload(_ content: ByteBuffer, _ range: Range<Int>) -> ByteBuffer {
        let text = String(
            decoding: content.readableBytesView.dropFirst(range.lowerBound).prefix(range.count),
            as: UTF8.self
        )
        if text == "=" { return content }
        guard let decoded = Data(base64Encoded: text), !decoded.isEmpty else { return Self.masked(content, range) }
        let filler = Data(decoded.map { $0 == 0 ? 0 : UInt8(ascii: "x") })
        let encoded = Array(filler.base64EncodedString().utf8)
        guard encoded.count == range.count else { return Self.masked(content, range) }
        return Self.replaced(content, range, with: encoded)
    }

    static func replaced(_ content: ByteBuffer, _ range: Range<Int>, with bytes: [UInt8]) -> ByteBuffer {
        var copy = content
        copy.setBytes(bytes, at: copy.readerIndex + range.lowerBound)
        return copy
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
