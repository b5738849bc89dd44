import Testing

@testable import POP3Rules

@Suite("Rules: decisions and limits, with the clock as a parameter")
struct RulesStateTests {
    static func state(_ text: String) -> RulesState {
        let (rules, problems) = RulesParser.parse(text, file: "t.rules")
        #expect(problems.isEmpty, "\(problems)")
        return RulesState(rules)
    }

    /// The line of the access rule that refused, nil when admitted or limited.
    static func line(_ admission: RulesState.Admission) -> Int? {
        if case .denied(let access) = admission { return access.source.line }
        return nil
    }

    let a = RuleAddress("192.0.2.1")!
    let b = RuleAddress("192.0.2.2")!

    @Test("first match wins; an address no line matches is admitted")
    func access() {
        var state = Self.state("deny from 10.9.0.0/16\nallow from 10.0.0.0/8\ndeny from any\n")
        #expect(state.admit(RuleAddress("10.1.2.3")!, now: 0).admitted)
        #expect(Self.line(state.admit(RuleAddress("10.9.2.3")!, now: 0)) == 1)
        #expect(Self.line(state.admit(RuleAddress("::ffff:10.9.2.3")!, now: 0)) == 1)
        #expect(Self.line(state.admit(RuleAddress("192.0.2.1")!, now: 0)) == 3)
        var open = Self.state("deny from 10.0.0.0/8\n")
        #expect(open.admit(self.a, now: 0).admitted)
    }

    @Test("the sixth connection in a minute is refused; a minute later there is room; each address counts apart")
    func connectionRate() {
        var state = Self.state("limit connections 5 per minute per client-ip\n")
        for second in 0..<5 { #expect(state.admit(self.a, now: Double(second)).admitted) }
        guard case .limited(let limit) = state.admit(self.a, now: 10) else {
            Issue.record("the sixth was admitted")
            return
        }
        #expect(limit.source.line == 1)
        #expect(state.admit(self.b, now: 10).admitted)
        #expect(state.admit(self.a, now: 60.5).admitted)
    }

    @Test("concurrent sessions: refused at the limit, room again once one ends; IPv6 grouped by /64")
    func concurrency() {
        var state = Self.state("limit sessions 2 concurrent per client-ip\n")
        let x = RuleAddress("2001:db8:1:2::a")!
        let y = RuleAddress("2001:db8:1:2::b")!
        let z = RuleAddress("2001:db8:1:3::a")!
        #expect(state.admit(x, now: 0).admitted)
        guard case .admit(let second) = state.admit(y, now: 0) else {
            Issue.record("the second was refused")
            return
        }
        #expect(!state.admit(x, now: 0).admitted)
        #expect(state.admit(z, now: 0).admitted)
        state.sessionEnded(second)
        #expect(state.admit(x, now: 1).admitted)
    }

    @Test("five failures in the window block the client for the block time, then it may try again")
    func authFailures() {
        var state = Self.state("limit auth-failures 5 per 10 minutes per client-ip then block 15 minutes\n")
        for minute in 0..<4 { #expect(state.authFailed(self.a, user: "alice", now: Double(minute * 60)) == nil) }
        #expect(state.blocked(self.a, user: "alice", now: 300) == nil)
        #expect(state.authFailed(self.a, user: "alice", now: 300)?.block == 900)
        #expect(state.blocked(self.a, user: "alice", now: 301)?.until == 1200)
        #expect(state.blocked(self.b, user: "alice", now: 301) == nil)
        #expect(state.blocked(self.a, user: "alice", now: 1200.5) == nil)
        // Failures out of the window do not add up.
        var slow = Self.state("limit auth-failures 3 per minute per client-ip then block 1 hour\n")
        for minute in 0..<10 { #expect(slow.authFailed(self.a, user: nil, now: Double(minute * 61)) == nil) }
    }

    @Test("per user: the same user from two addresses adds up; a login without a user name is not counted")
    func perUser() {
        var state = Self.state("limit auth-failures 2 per hour per user then block 1 hour\n")
        #expect(state.authFailed(self.a, user: "Alice", now: 0) == nil)
        #expect(state.authFailed(self.b, user: "alice", now: 1) != nil)
        #expect(state.blocked(RuleAddress("198.51.100.1")!, user: "ALICE", now: 2) != nil)
        #expect(state.authFailed(self.a, user: nil, now: 3) == nil)
    }

    @Test("denied commands and users, with patterns")
    func denials() {
        let state = Self.state("deny command DELE for user archive@*\ndeny command TOP\ndeny user *@old.example.org\n")
        #expect(state.commandDenied("dele", user: "archive@example.org")?.line == 1)
        #expect(state.commandDenied("DELE", user: "alice@example.org") == nil)
        #expect(state.commandDenied("DELE", user: nil) == nil)
        #expect(state.commandDenied("TOP", user: nil)?.line == 2)
        #expect(state.userDenied("Bob@OLD.example.org")?.line == 3)
        #expect(state.userDenied("bob@new.example.org") == nil)
        #expect(RulesState.matches("abc", "a*c*") && RulesState.matches("", "*") && !RulesState.matches("ab", "a*c"))
    }

    @Test("a reload keeps the counts and blocks of the lines whose kind and key stay; a new number applies to them")
    func reload() {
        var state = Self.state(
            """
            limit connections 3 per minute per client-ip
            limit sessions 2 concurrent per client-ip
            limit auth-failures 2 per hour per client-ip then block 1 hour
            limit auth-failures 9 per hour per user then block 1 hour
            """
        )
        var tickets: [RulesState.Ticket] = []
        for _ in 0..<2 {
            if case .admit(let ticket) = state.admit(self.a, now: 0) { tickets.append(ticket) }
        }
        #expect(state.authFailed(self.a, user: "alice", now: 0) == nil)
        #expect(state.authFailed(self.a, user: "alice", now: 1) != nil)
        #expect(state.blocked(self.a, user: nil, now: 2) != nil)
        // Same kinds and keys, other numbers and order; the per-user line is now per client-ip/48.
        let (rules, problems) = RulesParser.parse(
            """
            limit auth-failures 5 per hour per client-ip then block 2 hours
            limit connections 2 per minute per client-ip
            limit sessions 3 concurrent per client-ip
            limit auth-failures 9 per hour per client-ip/48 then block 1 hour
            """,
            file: "t.rules"
        )
        #expect(problems.isEmpty)
        var next = state.reloaded(rules)
        // Two connections this minute already: the new limit of 2 refuses the third.
        guard case .limited(let limit) = next.admit(self.a, now: 3) else {
            Issue.record("the count of connections did not survive the reload")
            return
        }
        #expect(limit.kind == .connections)
        // The block made under the old line is still in force.
        #expect(next.blocked(self.a, user: nil, now: 4) != nil)
        // Sessions counted before the reload end against the kept count.
        for ticket in tickets { next.sessionEnded(ticket) }
        #expect(next.admit(self.a, now: 61).admitted)
        // A line whose key changed starts from nothing.
        let changed = Self.state("limit connections 3 per minute per client-ip/48\n")
        var other = state.reloaded(changed.rules)
        #expect(other.admit(self.a, now: 5).admitted)
    }

    @Test("a session counted before a reload added a concurrency limit does not take from that limit's count")
    func ticketAcrossReload() {
        var state = Self.state("limit connections 100 per minute per client-ip\n")
        guard case .admit(let old) = state.admit(self.a, now: 0) else { return }
        var next = state.reloaded(Self.state("limit sessions 1 concurrent per client-ip\n").rules)
        #expect(next.admit(self.a, now: 1).admitted)
        next.sessionEnded(old)
        #expect(!next.admit(self.a, now: 2).admitted, "the old session's end freed a place it never held")
    }

    @Test("keys whose times have passed are let go, so memory follows the clients within the windows")
    func sweep() {
        var state = Self.state(
            "limit connections 5 per minute per client-ip\nlimit auth-failures 5 per minute per client-ip then block 1 minute\n"
        )
        for index in 0..<3000 {
            let address = RuleAddress.v4(0x0A00_0000 + UInt32(index))
            _ = state.admit(address, now: 0)
            _ = state.authFailed(address, user: nil, now: 0)
        }
        #expect(state.keysHeld == 6000)
        state.sweep(now: 30)
        #expect(state.keysHeld == 6000)
        state.sweep(now: 61)
        #expect(state.keysHeld == 0)
        // And without calling it: 4096 changes bring a sweep.
        for index in 0..<3000 { _ = state.admit(.v4(0x0A00_0000 + UInt32(index)), now: 0) }
        for index in 0..<4096 { _ = state.admit(.v4(0x0B00_0000 + UInt32(index)), now: 200) }
        #expect(state.keysHeld == 4096, "only the clients of the last minute are held")
    }

    @Test("deny from ... silently closes without a reply; allow ... silently is an error")
    func silently() {
        let (rules, problems) = RulesParser.parse("deny from 10.0.0.0/8 silently\ndeny from any\n", file: "t")
        #expect(problems.isEmpty)
        #expect(rules.access.map(\.silent) == [true, false])
        let (_, bad) = RulesParser.parse("allow from any silently\n", file: "t")
        #expect(bad.map(\.column) == [16])
    }

    @Test("explain: the line that decides, for refused and admitted clients, with and without TLS and a user")
    func explain() {
        let rules = Self.state(
            """
            allow from 127.0.0.0/8
            deny from 10.0.0.0/8 silently
            deny from any
            limit connections 30 per minute per client-ip
            limit auth-failures 5 per 10 minutes per user then block 1 hour
            require tls before USER, PASS
            deny command DELE for user archive@*
            deny user root
            """
        ).rules
        let refused = rules.explain(address: RuleAddress("192.0.2.9")!, user: nil, tls: false)
        #expect(!refused.admitted)
        #expect(
            refused.lines == [
                "192.0.2.9: refused by t.rules:3 (deny from any): the client is told -ERR [SYS/PERM] and the connection closes, before any upstream connection"
            ]
        )
        let silent = rules.explain(address: RuleAddress("10.1.1.1")!, user: nil, tls: false)
        #expect(
            silent.lines.first?.contains("t.rules:2") == true && silent.lines.first?.contains("without a reply") == true
        )
        let archive = rules.explain(address: RuleAddress("127.0.0.2")!, user: "archive@example.org", tls: false)
        #expect(archive.admitted)
        #expect(archive.lines[0] == "127.0.0.2: admitted by t.rules:1 (allow from 1 address range(s))")
        #expect(archive.lines.contains { $0.contains("30 connection(s) per minute") && $0.hasSuffix("(t.rules:4)") })
        #expect(
            archive.lines.contains {
                $0.contains("in 10 minutes as archive@example.org") && $0.contains("refused for 1 hour")
            }
        )
        #expect(archive.lines.contains { $0.contains("without TLS, PASS, USER are refused") })
        #expect(
            archive.lines.contains {
                $0.contains("DELE is refused for archive@example.org") && $0.hasSuffix("(t.rules:7)")
            }
        )
        let root = rules.explain(address: RuleAddress("127.0.0.2")!, user: "root", tls: true)
        #expect(root.lines.contains { $0.contains("user root is refused") && $0.hasSuffix("(t.rules:8)") })
        #expect(root.lines.contains { $0.contains("TLS is in place") })
        #expect(!root.lines.contains { $0.contains("DELE") })
    }
}
