import NIOCore
import Testing

@testable import POP3Core

@Suite("Command grammar")
struct CommandParserTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var line: String
        var expected: Command?
        var rules: Set<Rule> = []
        var testDescription: String { self.line.isEmpty ? "(empty)" : self.line }
    }

    static let cases: [Case] = [
        Case(line: "USER mrose", expected: .user("mrose")),
        Case(line: "user mrose", expected: .user("mrose")),
        Case(line: "PASS secret", expected: .pass(Credential("secret"))),
        Case(line: "PASS with spaces inside", expected: .pass(Credential("with spaces inside"))),
        Case(line: "PASS", expected: nil, rules: [.arguments]),
        Case(
            line: "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
            expected: .apop(name: "mrose", digest: Credential("c4c9334bac560ecc979e58001b3e22fb"))
        ),
        Case(
            line: "APOP mrose C4C9334BAC",
            expected: .apop(name: "mrose", digest: Credential("C4C9334BAC")),
            rules: [.apop]
        ),
        Case(line: "APOP mrose", expected: nil, rules: [.arguments]),
        Case(line: "AUTH", expected: .auth(mechanism: nil, initialResponse: nil)),
        Case(line: "AUTH plain", expected: .auth(mechanism: "PLAIN", initialResponse: nil)),
        Case(line: "AUTH PLAIN =", expected: .auth(mechanism: "PLAIN", initialResponse: Credential([UInt8]()))),
        Case(
            line: "AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            expected: .auth(mechanism: "PLAIN", initialResponse: Credential("AGFsaWNlAHNlY3JldA=="))
        ),
        Case(line: "AUTH not/a/mechanism", expected: nil, rules: [.authCommand]),
        Case(line: "STAT", expected: .stat),
        Case(line: "stat", expected: .stat),
        Case(line: "STAT 1", expected: nil, rules: [.arguments]),
        Case(line: "LIST", expected: .list(nil)),
        Case(line: "LIST 2", expected: .list(2)),
        Case(line: "LIST 0", expected: nil, rules: [.arguments]),
        Case(line: "LIST x", expected: nil, rules: [.arguments]),
        Case(line: "LIST 1 2", expected: nil, rules: [.arguments]),
        Case(line: "RETR 1", expected: .retr(1)),
        Case(line: "RETR", expected: nil, rules: [.arguments]),
        Case(line: "RETR -1", expected: nil, rules: [.arguments]),
        Case(line: "RETR 99999999999", expected: nil, rules: [.arguments]),
        Case(line: "RETR  1", expected: .retr(1), rules: [.commandSyntax]),
        Case(line: "DELE 3", expected: .dele(3)),
        Case(line: "NOOP", expected: .noop),
        Case(line: "RSET", expected: .rset),
        Case(line: "QUIT", expected: .quit),
        Case(line: "TOP 1 10", expected: .top(message: 1, lines: 10)),
        Case(line: "TOP 1 0", expected: .top(message: 1, lines: 0)),
        Case(line: "TOP 1", expected: nil, rules: [.arguments]),
        Case(line: "UIDL", expected: .uidl(nil)),
        Case(line: "UIDL 2", expected: .uidl(2)),
        Case(line: "CAPA", expected: .capa),
        Case(line: "STLS", expected: .stls),
        Case(line: "STLS now", expected: nil, rules: [.arguments]),
        Case(line: "UTF8", expected: .utf8),
        Case(line: "LANG", expected: .lang(nil)),
        Case(line: "LANG fr", expected: .lang("fr")),
        Case(line: "LAST", expected: .other(keyword: "LAST", arguments: []), rules: [.obsoleteCommand]),
        Case(line: "RPOP mrose", expected: .other(keyword: "RPOP", arguments: ["mrose"]), rules: [.obsoleteCommand]),
        Case(line: "XTND XMIT", expected: .other(keyword: "XTND", arguments: ["XMIT"]), rules: [.obsoleteCommand]),
        Case(
            line: "XSENDER 1",
            expected: .other(keyword: "XSENDER", arguments: ["1"]),
            rules: [.commandSyntax, .obsoleteCommand]
        ),
        Case(line: "HELO there", expected: .other(keyword: "HELO", arguments: ["there"])),
        Case(line: "GO", expected: .other(keyword: "GO", arguments: []), rules: [.commandSyntax]),
        Case(line: "", expected: .other(keyword: "", arguments: []), rules: [.commandSyntax]),
        Case(line: "USER caf\u{E9}", expected: .user("caf\u{E9}"), rules: [.eightBit]),
        Case(line: "RETR 2147483647", expected: .retr(2_147_483_647)),
        Case(line: "RETR 2147483648", expected: nil, rules: [.arguments]),
        Case(line: "LIST 1 ", expected: .list(1), rules: [.commandSyntax]),
        Case(line: " STAT", expected: .other(keyword: "", arguments: ["STAT"]), rules: [.commandSyntax]),
        Case(line: "stLs", expected: .stls),
        Case(
            line: "\u{E9}TAT",
            expected: .other(keyword: "\u{E9}TAT", arguments: []),
            rules: [.commandSyntax, .eightBit]
        ),
        Case(
            line: "USER " + String(repeating: "a", count: 41),
            expected: .user(String(repeating: "a", count: 41)),
            rules: [.commandLength]
        ),
    ]

    @Test("each command line parses to its command and reports its syntax problems", arguments: cases)
    func parse(_ c: Case) {
        let parsed = CommandParser.parse(Array(c.line.utf8))
        #expect(parsed.command == c.expected)
        #expect(Set(parsed.issues.map(\.rule)) == c.rules)
    }

    @Test(
        "well-formed commands encode back to the bytes they were parsed from",
        arguments: cases.filter { $0.rules.isEmpty && $0.expected != nil }
    )
    func roundTrip(_ c: Case) throws {
        let command = try #require(c.expected)
        var buffer = ByteBuffer()
        buffer.writeCommand(command, lineEnding: true)
        let reparsed = CommandParser.parse(Array(String(buffer: buffer).utf8.dropLast(2)))
        #expect(reparsed.command == command)
        // Keywords are case-insensitive; the encoder writes them in upper case.
        #expect(String(buffer: buffer).uppercased() == (c.line + "\r\n").uppercased() || c.line.contains("plain"))
    }

    @Test("a line read in place from a buffer parses as the same line copied out of it", arguments: cases)
    func inPlace(_ c: Case) {
        // Octets before the reader index must not be read: the line starts where the buffer's view starts.
        var buffer = ByteBuffer(string: "PASS x\r\n" + c.line)
        buffer.moveReaderIndex(forwardBy: 8)
        #expect(CommandParser.parse(buffer.readableBytesView) == CommandParser.parse(Array(c.line.utf8)))
        #expect(ReplyParser.parse(buffer.readableBytesView) == ReplyParser.parse(Array(c.line.utf8)))
    }

    @Test("a reply's fields are read as octets: runs of spaces are one separator unless empty fields are kept")
    func fields() {
        let stat = CommandParser.fields("  3  1051 octets")
        #expect(stat.count == 3)
        #expect(CommandParser.decimal(stat.first) == 3)
        #expect(CommandParser.decimal(stat.second) == 1051)
        let listing = CommandParser.fields("1  120", keepingEmpty: true)
        #expect(listing.count == 3)
        #expect(CommandParser.messageNumber(listing.first) == 1)
        #expect(CommandParser.decimal(listing.second) == nil)
        #expect(CommandParser.fields("", keepingEmpty: true).count == 1)
        #expect(CommandParser.fields("").count == 0)
        #expect(CommandParser.decimal("4294967296".utf8) == nil)
        #expect(CommandParser.decimal("0".utf8) == 0)
        #expect(CommandParser.messageNumber("0".utf8) == nil)
    }

    @Test("credentials are masked in the transcript text and located for same-length masking")
    func masking() {
        let pass = CommandParser.parse(Array("PASS hunter2 and more".utf8))
        #expect(pass.text == "PASS ********")
        #expect(pass.secretRange == 5..<21)
        let apop = CommandParser.parse(Array("APOP mrose c4c9334bac560ecc979e58001b3e22fb".utf8))
        #expect(apop.text == "APOP mrose ********")
        #expect(!apop.text.contains("c4c9"))
        let auth = CommandParser.parse(Array("AUTH PLAIN AGFsaWNlAHNlY3JldA==".utf8))
        #expect(auth.text == "AUTH PLAIN ********")
        #expect(Command.pass(Credential("hunter2")).maskedText == "PASS ********")
        #expect("\(Credential("hunter2"))" == "********")
    }
}
