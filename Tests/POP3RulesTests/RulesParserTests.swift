import Foundation
import Testing

@testable import POP3Rules

@Suite("Rules: the language")
struct RulesParserTests {
    static let sketch = """
        # The gateway in front of a legacy server.
        allow from 127.0.0.0/8, ::1
        allow from 10.0.0.0/8, 2001:db8::/32   # the office
        deny  from any

        limit connections      30 per minute     per client-ip
        limit sessions         5 concurrent      per client-ip/48
        limit auth-failures    5 per 10 minutes  per client-ip  then block 15 minutes
        limit auth-failures    10 per hour       per user       then block 1 hour

        require tls before USER, PASS, APOP, AUTH
        deny command DELE for user archive@example.org
        deny command TOP
        deny user *@old.example.org
        """

    @Test("every construct of the sketch reads into the rules, in order, each with its line")
    func sketchParses() throws {
        let (rules, problems) = RulesParser.parse(Self.sketch, file: "gateway.rules")
        #expect(problems.isEmpty, "\(problems)")
        #expect(rules.access.map(\.allow) == [true, true, false])
        #expect(rules.access.map(\.source.line) == [2, 3, 4])
        #expect(rules.access[0].addresses?.contains(RuleAddress("127.9.9.9")!) == true)
        #expect(rules.access[1].addresses?.contains(RuleAddress("2001:db8::5")!) == true)
        #expect(rules.access[2].addresses == nil)
        #expect(
            rules.limits == [
                .init(
                    kind: .connections,
                    count: 30,
                    window: 60,
                    key: .clientIP(v6Prefix: 64),
                    block: nil,
                    source: .init(file: "gateway.rules", line: 6)
                ),
                .init(
                    kind: .sessions,
                    count: 5,
                    window: nil,
                    key: .clientIP(v6Prefix: 48),
                    block: nil,
                    source: .init(file: "gateway.rules", line: 7)
                ),
                .init(
                    kind: .authFailures,
                    count: 5,
                    window: 600,
                    key: .clientIP(v6Prefix: 64),
                    block: 900,
                    source: .init(file: "gateway.rules", line: 8)
                ),
                .init(
                    kind: .authFailures,
                    count: 10,
                    window: 3600,
                    key: .user,
                    block: 3600,
                    source: .init(file: "gateway.rules", line: 9)
                ),
            ]
        )
        #expect(rules.tlsBefore == ["USER", "PASS", "APOP", "AUTH"])
        #expect(rules.commandDenials.map(\.command) == ["DELE", "TOP"])
        #expect(rules.commandDenials.map(\.user) == ["archive@example.org", nil])
        #expect(rules.deniedUsers.map(\.pattern) == ["*@old.example.org"])
    }

    @Test("files written with CRLF read as with LF: rules, prefix lists starting with a comment, blank lines counted")
    func crlf() {
        let files = [
            "block.txt": "# blocked\r\n\r\n192.0.2.0/24\r\n198.51.100.7 # one host\r\nnot-a-prefix\r\n",
            "more.rules": "deny from 203.0.113.9\r\n",
        ]
        let text = "deny from file block.txt\r\ninclude more.rules\r\n\r\nallow from any\r\nlimit nonsense\r\n"
        let (rules, problems) = RulesParser.parse(text, file: "main.rules") { path in
            guard let text = files[path] else { throw RulesProblem(file: path, line: 0, column: 0, message: "missing") }
            return text
        }
        #expect(rules.access.count == 3)
        #expect(rules.access[0].addresses?.contains(RuleAddress("192.0.2.77")!) == true)
        #expect(rules.access[0].addresses?.contains(RuleAddress("198.51.100.7")!) == true)
        #expect(rules.access[1].addresses?.contains(RuleAddress("203.0.113.9")!) == true)
        #expect(rules.access[2].source == .init(file: "main.rules", line: 4))
        // The bad prefix on the list's fifth line, the bad limit on the file's fifth: each where it is.
        #expect(problems.map { "\($0.file):\($0.line)" } == ["block.txt:5", "main.rules:5"])
        let (lf, _) = RulesParser.parse(text.replacingOccurrences(of: "\r\n", with: "\n"), file: "main.rules") {
            (files[$0] ?? "").replacingOccurrences(of: "\r\n", with: "\n")
        }
        #expect(lf == rules)
    }

    @Test("include and prefix files are read through the caller; a loop of includes is an error, not a hang")
    func includes() {
        let files = [
            "office.rules": "allow from file office.txt\ninclude main.rules\n",
            "office.txt": "# the office\n192.0.2.0/24\n198.51.100.7\nnot-a-prefix\n",
        ]
        let (rules, problems) = RulesParser.parse("include office.rules\ndeny from any\n", file: "main.rules") { path in
            guard let text = files[path] else { throw RulesProblem(file: path, line: 0, column: 0, message: "missing") }
            return text
        }
        #expect(rules.access.count == 2)
        #expect(rules.access[0].addresses?.contains(RuleAddress("192.0.2.200")!) == true)
        #expect(rules.access[0].source == .init(file: "office.rules", line: 1))
        #expect(
            problems.map(\.description) == [
                "office.txt:4:1: \"not-a-prefix\" is not an IPv4 or IPv6 address",
                "office.rules:2:9: main.rules includes itself, through this line",
            ]
        )
    }

    @Test(
        "a file included from many places is read once: a diamond keeps one copy, 7 files that all include each other are 7 reads, not thousands"
    )
    func includedOnce() {
        let diamond = [
            "a.rules": "include common.rules\n", "b.rules": "include common.rules\n",
            "common.rules": "deny from 192.0.2.1\n",
        ]
        var reads = 0
        let (rules, problems) = RulesParser.parse("include a.rules\ninclude b.rules\n", file: "main.rules") { path in
            reads += 1
            return diamond[path] ?? ""
        }
        #expect(problems.isEmpty && rules.access.count == 1 && reads == 3)
        let names = (0..<7).map { "f\($0).rules" }
        let all = names.map { "include \($0)\n" }.joined() + "allow from 10.0.0.1\n"
        reads = 0
        let (dense, loops) = RulesParser.parse(all, file: "main.rules") { _ in
            reads += 1
            return all
        }
        #expect(reads == 7 && dense.access.count == 8)
        // Every file includes the ones still open above it: each of those lines is a loop, named where it is.
        #expect(loops.count == 7 * 8 / 2 && loops.allSatisfy { $0.message.contains("includes itself") })
    }

    @Test("durations past a year, or not finite, are refused (explaining such a rule stopped the process)")
    func longDurations() {
        let text = """
            limit connections 30 per 1e300 days per client-ip
            limit auth-failures 5 per minute per user then block inf days
            limit connections 30 per 366 days per client-ip
            limit connections 30 per 365 days per client-ip
            limit auth-failures 5 per 1.5 minutes per user then block 8760 hours
            """
        let (rules, problems) = RulesParser.parse(text, file: "long.rules")
        #expect(problems.map(\.line) == [1, 2, 3])
        #expect(rules.limits.map(\.window) == [365 * 86_400, 90])
        #expect(rules.limits.last?.block == Double(8760 * 3600))
        #expect(!rules.explain(address: RuleAddress("192.0.2.1")!, user: "a", tls: false).lines.isEmpty)
    }

    @Test("every error has its line, its column and a hint; all of them are reported")
    func errors() {
        let text = """
            allow from 10.0.0.0/33
            deny from any, 10.0.0.0/8
            limit connections many per minute per client-ip
            limit sessions 5 per minute per client-ip
            limit auth-failures 5 per 10 minutes per client-ip
            limit connections 5 per fortnight per client-ip
            limit connections 5 per minute per user
            require tls before USER, FETCH
            deny command FETCH
            deny command DELE for archive
            route user *@legacy.example.org to legacy
            permit from any
            include
            """
        let (_, problems) = RulesParser.parse(text, file: "bad.rules")
        #expect(
            problems.map { "\($0.line):\($0.column) \($0.message)" } == [
                "1:12 \"/33\" is not a prefix length from 0 to 32",
                "2:11 any stands alone",
                "3:19 expected a count of at least 1",
                "4:18 expected concurrent",
                "5:51 expected then block DURATION, of a year at most",
                "6:25 expected per DURATION, of a year at most",
                "7:36 expected client-ip",
                "8:26 FETCH is not a POP3 command",
                "9:14 FETCH is not a POP3 command",
                "10:19 expected for user PATTERN",
                "11:1 route is not supported yet",
                "12:1 unknown rule permit",
                "13:8 include takes one file",
            ],
            "\(problems.map(\.description).joined(separator: "\n"))"
        )
        #expect(problems.allSatisfy { $0.hint != nil || $0.message.contains("POP3 command") })
        #expect(problems[10].hint?.contains("later release") == true)
    }
}
