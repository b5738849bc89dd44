import Foundation
import Testing

@testable import POP3Core

@Suite("Transcript records")
struct TranscriptRecordTests {
    /// What `jsonLine()` must equal: Foundation's encoder with the schema's options.
    static func reference(_ record: TranscriptRecord) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(record), as: UTF8.self)
    }

    @Test("jsonLine writes what JSONEncoder writes, for every field and every character class")
    func sameAsJSONEncoder() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [String] =
            (0..<0x20).map { String(UnicodeScalar(UInt8($0))) } + [
                "\"", "\\", "/", "a", "Z", " ", "é", "→", "😀", "\u{7F}", "\u{2028}", "\u{FEFF}", "{", "}", ":",
            ]
        func text() -> String? {
            guard Bool.random(using: &generator) else { return nil }
            return (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement()! }.joined()
        }
        func number() -> Int? { Bool.random() ? Int.random(in: -5...Int.max / 2) : nil }
        func flag() -> Bool? { Bool.random() ? Bool.random() : nil }
        for _ in 0..<2000 {
            var record = TranscriptRecord(session: text() ?? "s", time: text() ?? "t", kind: text() ?? "k")
            record.side = text()
            record.verb = text()
            record.status = text()
            record.code = text()
            record.multiline = flag()
            record.octets = number()
            record.lines = number()
            record.stuffed = number()
            record.complete = flag()
            record.rule = text()
            record.reason = text()
            record.state = text()
            record.text = text()
            record.note = text()
            record.client = text()
            record.server = text()
            #expect(record.jsonLine() == (try Self.reference(record)))
            // And it reads back as the record it came from.
            #expect(try JSONDecoder().decode(TranscriptRecord.self, from: Data(record.jsonLine().utf8)) == record)
        }
    }

    @Test(
        "timestamps: ISO 8601 in UTC with milliseconds, the same as Foundation's formatter",
        arguments: [
            0, 0.0009, 59.999, 86_399.9995, 951_782_400.5, 1_764_633_600.123, 4_102_444_799.999, -0.001, -86_400.5,
        ]
    )
    func timestamps(_ seconds: Double) {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        // Milliseconds cut, not rounded, as the transcripts always did.
        let cut = (seconds * 1000).rounded(.down) / 1000
        #expect(TranscriptRecord.timestamp(seconds) == formatter.string(from: Date(timeIntervalSince1970: cut)))
    }

    @Test("a year beyond four digits is written whole, not cut")
    func wideYear() {
        #expect(TranscriptRecord.timestamp(253_402_300_800) == "10000-01-01T00:00:00.000Z")
    }
}
