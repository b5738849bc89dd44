import NIOCore
import Testing

@testable import POP3Core

/// PASS, APOP and AUTH lines whose keyword is not followed by a space still carry a secret.
@Suite("Credentials behind other separators")
struct CredentialSeparatorTests {
    static let secret = "s3cr3t-Pw"
    /// A tab, a colon, a vertical tab, a non-breaking space (Latin-1 and UTF-8), a NUL, and nothing at all.
    static let separators: [[UInt8]] = [[0x09], [0x3A], [0x0B], [0xA0], [0xC2, 0xA0], [0x00], []]
    static let keywords = ["PASS", "pass", "APOP", "AUTH"]

    static func line(_ keyword: String, _ separator: [UInt8]) -> [UInt8] {
        Array(keyword.utf8) + separator + Array(Self.secret.utf8)
    }

    @Test("the transcript text never holds the secret, and the whole rest of the line is the secret's range")
    func parsed() {
        for keyword in Self.keywords {
            for separator in Self.separators {
                let bytes = Self.line(keyword, separator)
                let parsed = CommandParser.parse(bytes)
                #expect(!parsed.text.contains("s3cr3t"), "\(keyword) \(separator)")
                #expect(parsed.secretRange == 4..<bytes.count, "\(keyword) \(separator)")
                #expect(parsed.keyword == keyword.uppercased())
                #expect(parsed.command == nil)
            }
        }
    }

    @Test("the pcap export masks every octet after the keyword, keeping the length")
    func exported() {
        for keyword in Self.keywords {
            for separator in Self.separators {
                let bytes = Self.line(keyword, separator)
                var buffer = ByteBuffer()
                buffer.writeBytes(bytes)
                let masked = Array(ExportMask.commandLine(buffer, saslResponse: false).readableBytesView)
                #expect(masked.count == bytes.count)
                #expect(masked[..<4] == bytes[..<4])
                #expect(masked[4...].allSatisfy { $0 == ExportMask.octet }, "\(keyword) \(separator)")
            }
        }
    }

    @Test("a password of any length behind a space is masked whole, spaces included")
    func lengths() {
        for length in [1, 2, 40, 64, 65, 250] {
            let password = String(repeating: "p w", count: length).prefix(length)
            let parsed = CommandParser.parse(Array("PASS \(password)".utf8))
            #expect(parsed.text == "PASS " + Credential.mask)
            #expect(parsed.secretRange == 5..<(5 + password.utf8.count))
        }
    }

    @Test("words that only begin like them are not credentials: USER, PASSWORD-less lines stay readable")
    func notCredentials() {
        #expect(CommandParser.parse(Array("USER\talice".utf8)).secretRange == nil)
        #expect(CommandParser.parse(Array("PAS secret".utf8)).secretRange == nil)
    }
}
