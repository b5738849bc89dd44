import NIOCore
import Testing

@testable import POP3Core

@Suite("Reply grammar")
struct ReplyParserTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var line: String
        var sasl = false
        var expected: Reply?
        var rules: Set<Rule> = []
        var testDescription: String { self.line }
    }

    static let cases: [Case] = [
        Case(line: "+OK", expected: .ok()),
        Case(line: "+OK 2 320", expected: .ok("2 320")),
        Case(line: "-ERR", expected: .err()),
        Case(line: "-ERR no such message", expected: .err("no such message")),
        Case(line: "-ERR [IN-USE] maildrop locked", expected: .err("maildrop locked", code: .inUse)),
        Case(line: "-ERR [SYS/TEMP] try later", expected: .err("try later", code: .sysTemp)),
        Case(line: "-ERR [AUTH] bad password", expected: .err("bad password", code: .auth)),
        Case(line: "-ERR [LOGIN-DELAY] wait", expected: .err("wait", code: .loginDelay)),
        Case(line: "-ERR [SYS/PERM]", expected: .err("", code: .sysPerm)),
        Case(line: "-ERR [unterminated code", expected: .err("[unterminated code"), rules: [.responseCode]),
        Case(line: "-ERR [A//B] x", expected: .err("[A//B] x"), rules: [.responseCode]),
        Case(line: "+ok fine", expected: .ok("fine"), rules: [.statusIndicator]),
        Case(line: "-err nope", expected: .err("nope"), rules: [.statusIndicator]),
        Case(line: "+PONG", expected: nil),
        Case(line: "+OKAY", expected: nil),
        Case(line: "hello", expected: nil),
        Case(line: "+ ", sasl: true, expected: Reply(.continuation)),
        Case(
            line: "+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
            sasl: true,
            expected: Reply(.continuation, "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
        ),
        Case(line: "+", sasl: true, expected: Reply(.continuation), rules: [.saslChallenge]),
        Case(line: "+ ", sasl: false, expected: nil),
    ]

    @Test("each status line parses to its reply and reports its problems", arguments: cases)
    func parse(_ c: Case) {
        let parsed = ReplyParser.parse(Array(c.line.utf8), continuationAllowed: c.sasl)
        #expect(parsed.reply == c.expected)
        #expect(Set(parsed.issues.map(\.rule)) == c.rules)
    }

    @Test(
        "valid replies encode to the bytes they were parsed from",
        arguments: cases.filter { $0.rules.isEmpty && $0.expected != nil }
    )
    func roundTrip(_ c: Case) throws {
        let reply = try #require(c.expected)
        var buffer = ByteBuffer()
        buffer.writeReply(reply)
        #expect(
            String(buffer: buffer) == c.line + (c.line.hasSuffix(" ") || reply.status != .continuation ? "" : " ")
                + "\r\n" || reply.status == .continuation
        )
        let reparsed = ReplyParser.parse(Array(String(buffer: buffer).utf8.dropLast(2)), continuationAllowed: c.sasl)
        #expect(reparsed.reply == reply)
    }

    @Test("capability lines keep their parameters and compare names case-insensitively")
    func capability() throws {
        let sasl = try #require(Capability(line: "sasl PLAIN LOGIN"))
        #expect(sasl.name == "SASL")
        #expect(sasl.parameters == ["PLAIN", "LOGIN"])
        #expect(sasl.line == "SASL PLAIN LOGIN")
    }
}
