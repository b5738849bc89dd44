import NIOCore
import POP3Core
import Testing

@testable import POP3Relay

/// The relay machine with a client that speaks TLS from its first octet.
@Suite("Relay machine: TLS clients")
struct ClientTLSMachineTests {
    static func tls(_ adjust: (inout RelayMachine.Settings) -> Void = { _ in }) -> Harness {
        Harness {
            $0.clientTLS = true
            $0.handshakeTimeout = .seconds(10)
            adjust(&$0)
        }
    }

    @Test("nothing is admitted or connected before the handshake; after it the session starts, marked encrypted")
    func handshakeFirst() {
        var h = Self.tls()
        #expect(h.run { $0.clientConnected(now: $1, into: &$2) } == [])
        #expect(h.armed == [h.now + .seconds(10)])
        #expect(!h.machine.clientEncrypted)
        #expect(h.run { $0.clientTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) } == ["admit"])
        #expect(h.machine.clientEncrypted)
        #expect(h.run { $0.admitted(.admit, now: $1, into: &$2) } == ["connect"])
        // A second report of the same handshake changes nothing.
        #expect(h.run { $0.clientTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) } == [])
    }

    @Test("a handshake not done in time closes the client, and no upstream was ever asked for")
    func handshakeTimeout() {
        var h = Self.tls()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        #expect(h.advance(.seconds(9)) == [])
        #expect(h.advance(.seconds(1)) == ["close client"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.handshakeTimeout.rawValue)"])
        #expect(!h.all.contains { if case .connectUpstream = $0 { true } else { false } })
    }

    @Test("a failed handshake or a client gone during it ends the session as a failed handshake")
    func handshakeFailed() {
        var failed = Self.tls()
        failed.run { $0.clientConnected(now: $1, into: &$2) }
        #expect(
            failed.run { $0.clientFailed("not TLS", now: $1, into: &$2) }
                == ["close client", "ended: \(SessionEnd.handshakeFailed.rawValue)"]
        )
        var gone = Self.tls()
        gone.run { $0.clientConnected(now: $1, into: &$2) }
        #expect(gone.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.handshakeFailed.rawValue)"])
    }

    @Test("the hellos seen below TLS are recorded: the client's as the client's, the ServerHello as the gateway's")
    func hellos() {
        var h = Self.tls()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        let client = TLSHello(kind: .clientHello, version: 0x0304, serverName: "mail.example.org", cipherSuite: nil)
        let server = TLSHello(kind: .serverHello, version: 0x0304, serverName: nil, cipherSuite: 0x1302)
        h.run { $0.tlsHelloSeen(client, into: &$2) }
        h.run { $0.tlsHelloSeen(server, into: &$2) }
        let events = h.all.flatMap { action -> [ConversationEvent] in
            if case .record(let events) = action { events } else { [] }
        }
        #expect(events == [.tls(.client, client), .tls(.gateway, server)])
    }
}
