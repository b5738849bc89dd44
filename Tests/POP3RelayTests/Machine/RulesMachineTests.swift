import Foundation
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import POP3Rules
import Testing

@testable import POP3Relay

/// The rules as the relay machine applies them: refusals at admission, on commands and inside AUTH; failed
/// logins counted only when they are the user's doing; blocks that keep the credentials from the upstream.
/// The gate's clock is the test's.
@Suite("Relay machine: rules")
struct RulesMachineTests {
    final class Clock: Sendable {
        let seconds = NIOLockedValueBox(1000.0)
        var now: Double { self.seconds.withLockedValue { $0 } }
        func advance(_ by: Double) { self.seconds.withLockedValue { $0 += by } }
    }

    static func gate(_ text: String, clock: Clock = Clock()) -> RulesGate {
        let (rules, problems) = RulesParser.parse(text, file: "t.rules")
        #expect(problems.isEmpty, "\(problems)")
        return RulesGate(rules, clock: { clock.now })
    }

    static let client = RuleAddress("192.0.2.7")!

    /// A session through the gate's admission, relaying once greeted.
    static func session(_ gate: RulesGate, from address: RuleAddress = Self.client) -> Harness {
        var h = Harness { $0.rules = gate }
        h.run { $0.clientConnected(now: $1, address: address, into: &$2) }
        let (decision, _) = gate.admit(address)
        h.run { $0.admitted(decision, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        h.upstream("+OK ready\r\n")
        return h
    }

    var logs: (Harness) -> [String] = { h in
        h.all.compactMap { if case .log(_, let text) = $0 { text } else { nil } }
    }

    static func notes(_ h: Harness) -> [String] {
        h.all.flatMap { action -> [String] in
            guard case .record(let events) = action else { return [] }
            return events.compactMap { if case .annotation(.gateway, let text) = $0 { text } else { nil } }
        }
    }

    @Test("a denied address: -ERR [SYS/PERM] from the gateway, no upstream, no R9 or R11 blamed on a server")
    func deniedAddress() {
        let gate = Self.gate("deny from 192.0.2.0/24\n")
        var h = Harness {
            $0.rules = gate
            $0.annotate = true
        }
        h.run { $0.clientConnected(now: $1, address: Self.client, into: &$2) }
        let (decision, ticket) = gate.admit(Self.client)
        #expect(ticket == nil)
        #expect(
            h.run { $0.admitted(decision, now: $1, into: &$2) } == [
                "client ← -ERR [SYS/PERM] connections from 192.0.2.7 are not accepted here\r\n", "close client",
            ]
        )
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.refused.rawValue)"])
        #expect(h.anomalies.isEmpty, "\(h.anomalies)")
        #expect(Self.notes(h).contains { $0.contains("by the rule at t.rules:1") })
        #expect(
            self.logs(h).contains(
                "refused client=192.0.2.7: connections from 192.0.2.7 are not accepted here (t.rules:1)"
            )
        )
        #expect(gate.counts[.deniedAddress] == 1)
    }

    @Test("deny from ... silently: the connection closes with nothing written")
    func silentDenial() {
        let gate = Self.gate("deny from any silently\n")
        var h = Harness { $0.rules = gate }
        h.run { $0.clientConnected(now: $1, address: Self.client, into: &$2) }
        #expect(h.run { $0.admitted(gate.admit(Self.client).decision, now: $1, into: &$2) } == ["close client"])
        #expect(h.toClient.isEmpty)
    }

    @Test("the sixth connection in a minute and a session over the limit get -ERR [SYS/TEMP]; an ended one frees")
    func limits() {
        let clock = Clock()
        let sessions = Self.gate("limit sessions 2 concurrent per client-ip\n", clock: clock)
        let tickets = (0..<2).compactMap { _ in sessions.admit(Self.client).ticket }
        guard case .rule(let busy) = sessions.admit(Self.client).decision else {
            Issue.record("a third concurrent session was admitted")
            return
        }
        #expect(busy.temporary && busy.reason.contains("too many sessions at once"))
        sessions.ended(tickets[0])
        #expect(sessions.admit(Self.client).decision == .admit)
        #expect(sessions.counts[.concurrency] == 1)

        let connections = Self.gate("limit connections 5 per minute per client-ip\n", clock: clock)
        for _ in 0..<5 { #expect(connections.admit(Self.client).decision == .admit) }
        var h = Harness { $0.rules = connections }
        h.run { $0.clientConnected(now: $1, address: Self.client, into: &$2) }
        #expect(
            h.run { $0.admitted(connections.admit(Self.client).decision, now: $1, into: &$2) }.first
                == "client ← -ERR [SYS/TEMP] too many connections from 192.0.2.7; try again later\r\n"
        )
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.limited.rawValue)"])
        #expect(connections.counts[.connectionRate] == 1)
        clock.advance(60)
        #expect(connections.admit(Self.client).decision == .admit)
    }

    @Test("require tls before USER: refused in plaintext, not forwarded; after TLS it goes on")
    func tlsBefore() {
        let gate = Self.gate("require tls before USER, PASS\n")
        var h = Self.session(gate)
        #expect(
            h.client("USER alice\r\nCAPA\r\n") == [
                "client ← -ERR TLS is required before USER here: send STLS first, or use the TLS port\r\n",
                "upstream ← CAPA\r\n",
            ]
        )
        #expect(!h.upstreamWrites.contains { $0.hasPrefix("USER") })
        var tls = Harness {
            $0.rules = gate
            $0.clientTLS = true
        }
        tls.run { $0.clientConnected(now: $1, address: Self.client, into: &$2) }
        tls.run { $0.clientTLSEstablished(version: "TLSv1.3", now: $1, into: &$2) }
        tls.run { $0.admitted(.admit, now: $1, into: &$2) }
        tls.run { $0.upstreamConnected(now: $1, into: &$2) }
        tls.upstream("+OK\r\n")
        #expect(tls.client("USER alice\r\n") == ["upstream ← USER alice\r\n"])
    }

    @Test("deny command DELE for user archive@*: pipelined with USER and PASS, the replies keep their order")
    func deniedCommandInPipeline() {
        let gate = Self.gate("deny command DELE for user archive@*\n")
        var h = Self.session(gate)
        #expect(
            h.client("USER archive@example.org\r\nPASS secret\r\nDELE 1\r\nSTAT\r\nQUIT\r\n") == [
                "upstream ← USER archive@example.org\r\n", "upstream ← PASS secret\r\n", "upstream ← STAT\r\n",
                "upstream ← QUIT\r\n",
            ]
        )
        #expect(
            h.upstream("+OK\r\n+OK in\r\n+OK 2 20\r\n+OK bye\r\n") == [
                "client ← +OK\r\n+OK in\r\n", "client ← -ERR DELE is not allowed here\r\n",
                "client ← +OK 2 20\r\n+OK bye\r\n",
            ]
        )
        #expect(!h.upstreamWrites.contains { $0.hasPrefix("DELE") })
        #expect(gate.counts[.deniedCommand] == 1)
        // Someone else's DELE goes on.
        var other = Self.session(gate)
        other.client("USER alice\r\nPASS x\r\n")
        other.upstream("+OK\r\n+OK\r\n")
        #expect(other.client("DELE 1\r\n") == ["upstream ← DELE 1\r\n"])
    }

    @Test("deny user: USER, APOP and AUTH PLAIN's identity are refused with [SYS/PERM] before the upstream sees them")
    func deniedUser() {
        let gate = Self.gate("deny user root\ndeny user *@old.example.org\n")
        var h = Self.session(gate)
        #expect(h.client("USER root\r\n") == ["client ← -ERR [SYS/PERM] logins as root are not accepted here\r\n"])
        #expect(
            h.client("APOP bob@old.example.org c4c9334bac560ecc979e58001b3e22fb\r\n") == [
                "client ← -ERR [SYS/PERM] logins as bob@old.example.org are not accepted here\r\n"
            ]
        )
        let plain = Data("\0root\0secret".utf8).base64EncodedString()
        #expect(h.client("AUTH PLAIN \(plain)\r\n").first?.contains("logins as root are not accepted") == true)
        #expect(h.upstreamWrites.isEmpty)
        #expect(gate.counts[.deniedUser] == 3)
    }

    @Test("failed logins count only when they are the user's doing: not SYS, IN-USE, LOGIN-DELAY, nor empty AUTH")
    func whatCounts() {
        let gate = Self.gate("limit auth-failures 3 per hour per client-ip then block 1 hour\n")
        var h = Self.session(gate)
        h.client("USER alice\r\nPASS wrong\r\n")
        h.upstream("+OK\r\n-ERR [AUTH] invalid login\r\n")
        for reply in ["-ERR [SYS/TEMP] database down", "-ERR [IN-USE] locked", "-ERR [LOGIN-DELAY] too soon"] {
            h.client("USER alice\r\nPASS right\r\n")
            h.upstream("+OK\r\n\(reply)\r\n")
        }
        // An unknown mechanism, and an exchange the client cancelled: no credentials were tried.
        h.client("AUTH X-UNKNOWN\r\n")
        h.upstream("-ERR unsupported mechanism\r\n")
        h.client("AUTH LOGIN\r\n")
        h.upstream("+ VXNlcm5hbWU6\r\n")
        h.client("*\r\n")
        h.upstream("-ERR cancelled\r\n")
        #expect(gate.counts[.authFailure] == 1)
        // AUTH PLAIN with a wrong password counts, as user alice.
        let plain = Data("\0alice\0wrong".utf8).base64EncodedString()
        h.client("AUTH PLAIN \(plain)\r\n")
        h.upstream("-ERR [AUTH] no\r\n")
        #expect(gate.counts[.authFailure] == 2)
        #expect(self.logs(h).contains("auth-failure client=192.0.2.7 user=alice command=AUTH"))
        #expect(!self.logs(h).joined().contains("wrong"), "a password reached the log")
    }

    @Test("three wrong passwords block the address: the next PASS gets -ERR [SYS/TEMP] and never goes upstream")
    func blockAfterFailures() {
        let clock = Clock()
        let gate = Self.gate("limit auth-failures 3 per 10 minutes per client-ip then block 15 minutes\n", clock: clock)
        var h = Self.session(gate)
        for _ in 0..<3 {
            h.client("USER alice\r\nPASS wrong\r\n")
            h.upstream("+OK\r\n-ERR [AUTH] invalid\r\n")
        }
        #expect(gate.counts[.blockStarted] == 1)
        #expect(self.logs(h).contains("blocking client=192.0.2.7 for 15 minute(s) after 3 failed logins (t.rules:1)"))
        // Even from a new session, and with the right password.
        var next = Self.session(gate)
        #expect(next.client("USER alice\r\n") == ["upstream ← USER alice\r\n"])
        next.upstream("+OK\r\n")
        clock.advance(60)
        #expect(
            next.client("PASS right\r\n") == [
                "client ← -ERR [SYS/TEMP] login refused for 14 more minutes after repeated failed logins\r\n"
            ]
        )
        #expect(!next.upstreamWrites.contains { $0.hasPrefix("PASS") })
        // Another address is not blocked; after the block, the address may try again.
        var other = Self.session(gate, from: RuleAddress("192.0.2.8")!)
        other.client("USER alice\r\n")
        other.upstream("+OK\r\n")
        #expect(other.client("PASS right\r\n") == ["upstream ← PASS right\r\n"])
        clock.advance(15 * 60)
        #expect(next.client("PASS right\r\n") == ["upstream ← PASS right\r\n"])
    }

    @Test("a user blocked by name inside AUTH LOGIN: the gateway sends * for the user's response, and says why")
    func blockedInsideAUTH() {
        let gate = Self.gate("limit auth-failures 1 per hour per user then block 1 hour\n")
        var first = Self.session(gate)
        first.client("USER carol\r\nPASS wrong\r\n")
        first.upstream("+OK\r\n-ERR [AUTH] invalid\r\n")
        var h = Self.session(gate, from: RuleAddress("198.51.100.1")!)
        #expect(h.client("AUTH LOGIN\r\n") == ["upstream ← AUTH LOGIN\r\n"])
        h.upstream("+ VXNlcm5hbWU6\r\n")
        let name = Data("carol".utf8).base64EncodedString()
        #expect(h.client("\(name)\r\n") == ["upstream ← *\r\n"])
        #expect(
            h.upstream("-ERR authentication cancelled\r\n") == [
                "client ← -ERR [SYS/TEMP] login refused for 60 more minutes after repeated failed logins\r\n"
            ]
        )
        #expect(!h.toClient.contains("cancelled"))
        // Not a failure of its own: the block does not feed itself.
        #expect(gate.counts[.authFailure] == 1)
        #expect(h.client("NOOP\r\n") == ["upstream ← NOOP\r\n"])
    }

    @Test("the rules see a socket's address from its octets: IPv4, IPv6, IPv4-mapped IPv6 as IPv4, none for Unix")
    func socketAddresses() throws {
        #expect(RuleAddress(try SocketAddress(ipAddress: "192.0.2.7", port: 1)) == RuleAddress("192.0.2.7"))
        #expect(RuleAddress(try SocketAddress(ipAddress: "2001:db8::9", port: 1)) == RuleAddress("2001:db8::9"))
        #expect(RuleAddress(try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 1)) == .v4(0x0A01_0203))
        #expect(RuleAddress(try SocketAddress(unixDomainSocketPath: "/tmp/x")) == nil)
        #expect(RuleAddress(nil as SocketAddress?) == nil)
    }
}
