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
}
