#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Messages for a maildrop: generated samples, or the `.eml` files of a directory.
public enum SampleMessages {
    /// A few short messages; one has lines that begin with a dot, to show byte-stuffing.
    public static func generated() -> [StoredMessage] {
        let messages = [
            """
            From: Ada <ada@example.org>\r
            To: Alice <alice@example.org>\r
            Subject: Welcome to POP3\r
            Date: Sat, 21 Nov 2026 09:00:00 +0000\r
            Message-ID: <welcome@example.org>\r
            \r
            Hello Alice,\r
            \r
            This message lives on the server until a session deletes it and ends with QUIT.\r
            \r
            Ada\r

            """,
            """
            From: Bob <bob@example.org>\r
            To: Alice <alice@example.org>\r
            Subject: Lines that begin with a dot\r
            Date: Sat, 21 Nov 2026 09:05:00 +0000\r
            Message-ID: <dots@example.org>\r
            \r
            The next line begins with a dot, so the server sends it with two:\r
            .signature\r
            and a line with one dot alone is sent as two dots:\r
            .\r
            That is byte-stuffing (RFC 1939 section 3).\r

            """,
            """
            From: Carol <carol@example.org>\r
            To: Alice <alice@example.org>\r
            Subject: Meeting notes\r
            Date: Sat, 21 Nov 2026 09:10:00 +0000\r
            Message-ID: <notes@example.org>\r
            \r
            1. POP3 has three states: AUTHORIZATION, TRANSACTION and UPDATE.\r
            2. DELE only marks a message; QUIT makes it so.\r
            3. RSET takes the marks back.\r
            4. TOP shows the headers and the first lines of the body.\r
            5. UIDL gives ids that stay the same from one session to the next.\r

            """,
        ]
        return messages.enumerated().map { index, text in
            StoredMessage(uniqueID: "popgate-sample-\(index + 1)", bytes: Array(text.utf8))
        }
    }

    /// The `.eml` files of `directory`, sorted by name; each file's name is its unique id.
    public static func load(directory: String) throws -> [StoredMessage] {
        let url = URL(fileURLWithPath: directory)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasSuffix(".eml") }
            .sorted()
        return try names.map { name in
            let data = try Data(contentsOf: url.appendingPathComponent(name))
            let id = String(name.dropLast(4).unicodeScalars.filter { $0.value > 0x20 && $0.value < 0x7F }.prefix(70))
            return StoredMessage(uniqueID: id.isEmpty ? "message" : id, bytes: Array(data))
        }
    }
}
