import Foundation
import NIOCore
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
            record.severity = text()
            record.gateway = text()
            record.via = text()
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

    @Test("a clock gone far wrong still gives a timestamp (a crafted capture's 1e300 seconds trapped)")
    func absurdTimes() {
        for seconds in [1e300, -1e300, Double.infinity, -Double.infinity, Double.nan, 9.3e15] {
            let stamp = TranscriptRecord.timestamp(seconds)
            #expect(stamp.hasSuffix("Z") && stamp.contains("T"), "\(seconds): \(stamp)")
        }
        #expect(TranscriptRecord.timestamp(.nan) == "1970-01-01T00:00:00.000Z")
    }

    @Test("a renderer writing into a buffer writes the lines it returns, in both formats, opaque counts and all")
    func renderIntoBuffer() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        machine.serverSent(ByteBuffer(string: "+OK ready <1.2@x>\r\n"), into: &events)
        machine.clientSent(
            ByteBuffer(string: "CAPA\r\nUSER a\"b\\\tc\r\nPASS secret\r\nLIST\r\nSTLS\r\n"),
            into: &events
        )
        machine.serverSent(
            ByteBuffer(string: "+OK\r\nUSER\r\nSTLS\r\n.\r\n+OK\r\n+OK\r\n+OK 1 5\r\n1 5\r\n.\r\n+OK go\r\n"),
            into: &events
        )
        machine.clientSent(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), into: &events)
        machine.serverSent(ByteBuffer(bytes: [0x16, 0x03, 0x03, 0x00, 0x02, 1, 2]), into: &events)
        events += machine.clientClosed()
        events += machine.serverClosed()
        #expect(events.contains { if case .opaque = $0 { true } else { false } })
        for format in TranscriptRenderer.Format.allCases {
            var lines = TranscriptRenderer(session: "s", format: format)
            var bytes = TranscriptRenderer(session: "s", format: format)
            var expected = ""
            var buffer = ByteBuffer()
            for (index, event) in events.enumerated() {
                for line in lines.render(event, time: Double(index)) { expected += line + "\n" }
                bytes.render(event, time: Double(index), into: &buffer)
            }
            expected += lines.end(time: 99, summary: "done").map { $0 + "\n" }.joined()
            buffer.writeString(bytes.end(time: 99, summary: "done").map { $0 + "\n" }.joined())
            #expect(String(buffer: buffer) == expected, "\(format)")
            #expect(expected.contains("USER a\\\"b") || format == .text)
        }
    }
}
