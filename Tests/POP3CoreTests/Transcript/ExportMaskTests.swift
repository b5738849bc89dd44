import NIOCore
import POP3Core
import Testing

@Suite("Same-length masks for exports")
struct ExportMaskTests {
    static func masked(_ line: String, sasl: Bool = false) -> String {
        String(buffer: ExportMask.commandLine(ByteBuffer(string: line), saslResponse: sasl))
    }

    @Test(
        "secrets in command lines are masked keeping their length and their syntax; everything else stays",
        arguments: [
            ("PASS secret", "PASS ******"),
            ("pass two words", "pass *********"),
            // A digest stays 32 lower-case hex digits, so the export does not read as a bad APOP (R26).
            ("APOP mrose c4c9334bac560ecc979e58001b3e22fb", "APOP mrose " + String(repeating: "0", count: 32)),
            ("APOP mrose NOT-A-DIGEST", "APOP mrose ************"),
            // Base64 of as many x, the NULs kept: PLAIN's shape (authzid NUL authcid NUL password) stays (R39).
            ("AUTH PLAIN AGFsaWNlAHM=", "AUTH PLAIN AHh4eHh4AHg="),
            ("AUTH PLAIN not-base64", "AUTH PLAIN **********"),
            ("AUTH PLAIN =", "AUTH PLAIN ="),
            ("AUTH PLAIN", "AUTH PLAIN"),
            ("USER alice", "USER alice"),
            ("RETR 1", "RETR 1"),
        ]
    )
    func commandLines(line: String, expected: String) {
        #expect(Self.masked(line) == expected)
        #expect(Self.masked(line).utf8.count == line.utf8.count)
    }

    @Test("a SASL response is masked whole, as base64 of as many x when it is base64; a cancelling * stays")
    func saslResponses() {
        #expect(Self.masked("YWxpY2U=", sasl: true) == "eHh4eHg=")
        #expect(Self.masked("d29uZGVybGFuZA==", sasl: true) == "eHh4eHh4eHh4eA==")
        #expect(Self.masked("no base64 here", sasl: true) == String(repeating: "*", count: 14))
        #expect(Self.masked("*", sasl: true) == "*")
    }

    @Test("challenge texts are masked across pieces; other lines are not")
    func challenges() {
        var mask = ExportMask.Challenges()
        let pieces = ["+ VXNlcm", "5hbWU6\r", "\n+OK done\r\n+", " UGFz\r\n"]
        let out = pieces.map { String(buffer: mask.mask(ByteBuffer(string: $0))) }.joined()
        #expect(out == "+ ************\r\n+OK done\r\n+ ****\r\n")
        mask.reset()
        #expect(String(buffer: mask.mask(ByteBuffer(string: "+OK x\r\n"))) == "+OK x\r\n")
    }
}
