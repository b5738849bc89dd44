import Testing

@testable import POP3Rules

@Suite("Rules: decisions and limits, with the clock as a parameter")
struct RulesStateTests {
    static func state(_ text: String) -> RulesState {
        let (rules, problems) = RulesParser.parse(text, file: "t.rules")
        #expect(problems.isEmpty, "\(problems)")
        return RulesState(rules)
    }

    let a = RuleAddress("192.0.2.1")!
    let b = RuleAddress("192.0.2.2")!

    @Test("first match wins; an address no line matches is admitted")
    func access() {
        var state = Self.state("deny from 10.9.0.0/16\nallow from 10.0.0.0/8\ndeny from any\n")
        #expect(state.admit(RuleAddress("10.1.2.3")!, now: 0) == .admit)
        #expect(state.admit(RuleAddress("10.9.2.3")!, now: 0) == .denied(.init(file: "t.rules", line: 1)))
        #expect(state.admit(RuleAddress("::ffff:10.9.2.3")!, now: 0) == .denied(.init(file: "t.rules", line: 1)))
        #expect(state.admit(RuleAddress("192.0.2.1")!, now: 0) == .denied(.init(file: "t.rules", line: 3)))
        var open = Self.state("deny from 10.0.0.0/8\n")
        #expect(open.admit(self.a, now: 0) == .admit)
    }

    @Test("the sixth connection in a minute is refused; a minute later there is room; each address counts apart")
    func connectionRate() {
        var state = Self.state("limit connections 5 per minute per client-ip\n")
        for second in 0..<5 { #expect(state.admit(self.a, now: Double(second)) == .admit) }
        guard case .limited(let limit) = state.admit(self.a, now: 10) else {
            Issue.record("the sixth was admitted")
            return
        }
        #expect(limit.source.line == 1)
        #expect(state.admit(self.b, now: 10) == .admit)
        #expect(state.admit(self.a, now: 60.5) == .admit)
    }

    @Test("concurrent sessions: refused at the limit, room again once one ends; IPv6 grouped by /64")
    func concurrency() {
        var state = Self.state("limit sessions 2 concurrent per client-ip\n")
        let x = RuleAddress("2001:db8:1:2::a")!
        let y = RuleAddress("2001:db8:1:2::b")!
        let z = RuleAddress("2001:db8:1:3::a")!
        #expect(state.admit(x, now: 0) == .admit)
        #expect(state.admit(y, now: 0) == .admit)
        #expect(state.admit(x, now: 0) != .admit)
        #expect(state.admit(z, now: 0) == .admit)
        state.sessionEnded(y)
        #expect(state.admit(x, now: 1) == .admit)
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
}
