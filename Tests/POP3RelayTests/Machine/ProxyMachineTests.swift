import NIOCore
import POP3Core
import POP3Rules
import Testing

@testable import POP3Relay

/// The PROXY protocol as the relay machine reads it: only from trusted balancers, within its time, before
/// anything else; the client it names is the one the rules see; TLS goes in after it.
@Suite("Relay machine: PROXY protocol")
struct ProxyMachineTests {
    static let balancer = RuleAddress("10.0.0.10")!
    static let proxy = RelayMachine.Proxy(trusted: AddressSet([try! RulePrefix(parsing: "10.0.0.0/24")]))
    static let header = "PROXY TCP4 192.0.2.7 10.0.0.1 51234 110\r\n"

    static func connected(
        from peer: RuleAddress = Self.balancer,
        adjust: (inout RelayMachine.Settings) -> Void = { _ in }
    ) -> (Harness, [String]) {
        var h = Harness {
            $0.proxy = Self.proxy
            adjust(&$0)
        }
        let actions = h.run { $0.clientConnected(now: $1, address: peer, into: &$2) }
        return (h, actions)
    }

    @Test("a connection from a peer that is not a trusted balancer is closed at once, nothing upstream")
    func untrusted() {
        var (h, actions) = Self.connected(from: RuleAddress("192.0.2.99")!)
        #expect(actions == ["close client"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.proxyRefused.rawValue)"])
    }

    @Test("a header split across reads: nothing until its end; then the client it names, admission, and the rest")
    func splitHeader() {
        var (h, actions) = Self.connected()
        #expect(actions.isEmpty)
        #expect(h.client("PROXY TCP4 192.0.2.7 10.0") == [])
        #expect(
            h.client(".0.1 51234 110\r\nCAPA\r\n") == ["identified 192.0.2.7:51234 via 10.0.0.10", "admit"]
        )
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        // What followed the header is the client's: it goes on after the greeting.
        #expect(h.upstream("+OK\r\n") == ["client ← +OK\r\n", "upstream ← CAPA\r\n"])
    }

    @Test("the rules see the client the header names, not the balancer")
    func rulesSeeTheClient() {
        let (rules, _) = RulesParser.parse("deny from 192.0.2.0/24\n", file: "t.rules")
        let gate = RulesGate(rules)
        var (h, _) = Self.connected { $0.rules = gate }
        h.client(Self.header)
        let (decision, _) = gate.admit(RuleAddress("192.0.2.7")!)
        #expect(
            h.run { $0.admitted(decision, now: $1, into: &$2) }.first
                == "client ← -ERR [SYS/PERM] connections from 192.0.2.7 are not accepted here\r\n"
        )
        #expect(h.all.contains { if case .log(_, let text) = $0 { text.contains("client=192.0.2.7") } else { false } })
    }

    @Test("a malformed header, a missing one, or the connection ending first: closed, never admitted")
    func badHeaders() {
        for input in ["PROXY TCP4 192.0.2.7 10.0.0.1 99999 110\r\n", "USER alice\r\n", "\u{16}\u{3}\u{1}\u{0}"] {
            var (h, _) = Self.connected()
            #expect(h.client(input) == ["close client"], "\(input.debugDescription)")
            #expect(!h.all.contains(.admit))
        }
        var (h, _) = Self.connected()
        h.client("PROXY TCP4")
        #expect(h.run { $0.clientInputClosed(now: $1, into: &$2) } == ["close client"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.proxyRefused.rawValue)"])
    }

    @Test("no header within the time: closed with its own reason")
    func timeout() {
        var (h, _) = Self.connected()
        #expect(h.armed.last == h.now + .seconds(5))
        #expect(h.advance(.seconds(4)) == [])
        #expect(h.advance(.seconds(1)) == ["close client"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.proxyTimeout.rawValue)"])
    }

    @Test("v1 UNKNOWN and v2 LOCAL are the balancer's own connection: admitted as the balancer")
    func local() {
        var (h, _) = Self.connected()
        #expect(h.client("PROXY UNKNOWN\r\n") == ["identified - via -", "admit"])
        var (v2, _) = Self.connected()
        let local = ProxyHeader.signature + [0x20, 0x00, 0x00, 0x00]
        #expect(
            v2.run { $0.clientRead(ByteBuffer(bytes: local), now: $1, into: &$2) } == ["identified - via -", "admit"]
        )
    }

    @Test("on a TLS port the header comes first, then TLS goes in with the octets read after the header")
    func tlsAfterHeader() {
        var (h, _) = Self.connected { $0.clientTLS = true }
        #expect(
            h.client(Self.header + "\u{16}\u{3}\u{1}") == [
                "identified 192.0.2.7:51234 via 10.0.0.10", "begin TLS with 3 octets",
            ]
        )
        #expect(!h.all.contains(.admit), "admission waits for the handshake")
        h.run { $0.clientTLSEstablished(version: "TLSv1.3", now: $1, into: &$2) }
        #expect(h.all.contains(.admit))
    }
}
