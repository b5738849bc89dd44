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

    // MARK: - STLS answered by the gateway

    static func stls(requireTLS: Bool = false) -> Harness {
        Harness.relaying {
            $0.terminatesSTLS = true
            $0.requireTLS = requireTLS
        }
    }

    static let capa = "+OK\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256-PLUS SCRAM-SHA-256\r\nPIPELINING\r\n.\r\n"

    @Test("CAPA through a gateway with a certificate: STLS added, -PLUS mechanisms out, the rest as it came")
    func capaEdited() {
        var h = Self.stls()
        h.client("CAPA\r\n")
        #expect(h.upstreamWrites == ["CAPA\r\n"])
        h.upstream(Self.capa)
        #expect(
            h.toClient.hasSuffix("+OK\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256\r\nPIPELINING\r\nSTLS\r\n.\r\n"),
            "\(h.toClient)"
        )
        // An upstream that offers STLS itself: offered once, not twice.
        var twice = Self.stls()
        twice.client("CAPA\r\n")
        twice.upstream("+OK\r\nSTLS\r\nUSER\r\n.\r\n")
        #expect(twice.toClient.hasSuffix("+OK\r\nSTLS\r\nUSER\r\n.\r\n"), "\(twice.toClient)")
    }

    @Test("an upstream that refuses CAPA: the client gets the gateway's own list, with STLS")
    func capaRefused() {
        var h = Self.stls()
        h.client("CAPA\r\n")
        h.upstream("-ERR unknown command\r\n")
        #expect(h.toClient.hasSuffix("+OK Capability list follows\r\nSTLS\r\n.\r\n"), "\(h.toClient)")
    }

    @Test("STLS is answered by the gateway, never sent upstream; after the handshake POP3 goes on, CAPA without STLS")
    func stlsAnswered() {
        var h = Self.stls()
        #expect(h.client("STLS\r\n") == ["client ← +OK Begin TLS negotiation\r\n", "start TLS"])
        #expect(h.upstreamWrites.isEmpty)
        #expect(h.machine.startingTLS && !h.machine.clientEncrypted)
        h.run { $0.clientTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) }
        #expect(h.machine.clientEncrypted && !h.machine.startingTLS)
        #expect(h.machine.conversation.state == .authorization)
        h.client("CAPA\r\n")
        #expect(h.upstreamWrites == ["CAPA\r\n"])
        h.upstream("+OK\r\nSTLS\r\nUSER\r\n.\r\n")
        #expect(h.toClient.hasSuffix("+OK\r\nUSER\r\n.\r\n"), "\(h.toClient)")
        // A second STLS inside TLS is the gateway's to refuse.
        #expect(h.client("STLS\r\n") == ["client ← -ERR TLS is already active\r\n"])
        #expect(h.anomalies.map(\.rule).filter { $0 != .stlsAdvertised } == [.stlsUnderTLS], "\(h.anomalies)")
    }

    @Test("a handshake after STLS that fails (garbage, not TLS) closes the upstream too, never with QUIT, and ends")
    func stlsHandshakeFailed() {
        var h = Self.stls()
        h.client("STLS\r\n")
        #expect(
            h.run { $0.clientFailed("what the client sent is not TLS", now: $1, into: &$2) }
                == ["close upstream", "close client"]
        )
        #expect(h.upstreamWrites.isEmpty, "nothing, and no QUIT, for a client that failed")
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == [])
        #expect(
            h.run { $0.upstreamClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.handshakeFailed.rawValue)"]
        )
    }

    @Test("plaintext sent after STLS in the same read is dropped and reported (R31), never forwarded")
    func injectionSameRead() {
        var h = Self.stls()
        h.client("STLS\r\nUSER evil\r\nPASS evil\r\n")
        #expect(h.upstreamWrites.isEmpty)
        #expect(h.anomalies.filter { $0.rule == .stls }.count == 1, "\(h.anomalies)")
        h.run { $0.clientTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) }
        h.client("USER alice\r\n")
        #expect(h.upstreamWrites == ["USER alice\r\n"])
    }

    @Test("plaintext sent while the +OK to STLS waits behind a pipelined reply is dropped and reported too")
    func injectionBehindPipelinedReply() {
        var h = Self.stls()
        h.client("NOOP\r\nSTLS\r\n")
        #expect(h.upstreamWrites == ["NOOP\r\n"])
        // Another read before the upstream answers the NOOP: the +OK to STLS is not out yet.
        h.client("USER evil\r\n")
        #expect(h.upstreamWrites == ["NOOP\r\n"])
        #expect(h.upstream("+OK\r\n").suffix(2) == ["client ← +OK Begin TLS negotiation\r\n", "start TLS"])
        #expect(h.anomalies.filter { $0.rule == .stls }.count == 1, "\(h.anomalies)")
        #expect(
            h.anomalies.first { $0.rule == .stls }?.reason.hasPrefix("11 octets of plaintext followed STLS") == true
        )
        #expect(h.upstreamWrites == ["NOOP\r\n"])
    }

    @Test("require TLS: logins before STLS are refused locally; CAPA withholds USER and SASL; after TLS they go on")
    func requireTLS() {
        var h = Self.stls(requireTLS: true)
        for line in ["USER alice", "PASS secret", "APOP alice 0123456789abcdef0123456789abcdef", "AUTH PLAIN"] {
            #expect(
                h.client(line + "\r\n")
                    == ["client ← -ERR TLS is required here: send STLS first, or connect to the POP3S port (995)\r\n"]
            )
        }
        #expect(h.upstreamWrites.isEmpty)
        h.client("CAPA\r\n")
        h.upstream(Self.capa)
        #expect(h.toClient.hasSuffix("+OK\r\nPIPELINING\r\nSTLS\r\n.\r\n"), "\(h.toClient)")
        h.client("STLS\r\n")
        h.run { $0.clientTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) }
        h.client("USER alice\r\n")
        #expect(h.upstreamWrites == ["CAPA\r\n", "USER alice\r\n"])
    }

    @Test("a client that never finishes the handshake after STLS is closed at the handshake time, without QUIT")
    func stlsHandshakeTimeout() {
        var h = Self.stls()
        h.client("STLS\r\n")
        #expect(h.advance(.seconds(10)) == ["close upstream", "close client"])
        #expect(!h.upstreamWrites.contains("QUIT\r\n"))
    }

    @Test("a ClientHello on a plaintext port that has a certificate: closed, nothing upstream, the reason recorded")
    func tlsOnPlaintextPort() {
        var h = Self.stls()
        let hello: [UInt8] = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x03]
        #expect(
            h.run { $0.clientRead(ByteBuffer(bytes: hello), now: $1, into: &$2) } == ["close upstream", "close client"]
        )
        #expect(h.upstreamWrites.isEmpty)
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.tlsOnPlaintextPort.rawValue)"])
    }

    @Test("ALPN without pop3 refuses the handshake (ALPACA); pop3 among others, or no ALPN at all, goes on")
    func alpaca() {
        var refused = Self.tls()
        refused.run { $0.clientConnected(now: $1, into: &$2) }
        let http = TLSHello(kind: .clientHello, version: 0x0304, alpn: ["http/1.1"])
        #expect(refused.run { $0.tlsHelloSeen(http, into: &$2) } == ["refuse handshake"])
        #expect(refused.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.alpnRefused.rawValue)"])
        for alpn in [["h2", "pop3"], nil] {
            var fine = Self.tls()
            fine.run { $0.clientConnected(now: $1, into: &$2) }
            #expect(
                fine.run { $0.tlsHelloSeen(TLSHello(kind: .clientHello, version: 0x0304, alpn: alpn), into: &$2) } == []
            )
        }
        // After STLS too: the upstream connection goes with it.
        var stls = Self.stls()
        stls.client("STLS\r\n")
        #expect(stls.run { $0.tlsHelloSeen(http, into: &$2) } == ["close upstream", "refuse handshake"])
    }

    // MARK: - STLS to the upstream

    static func upstreamSTLS() -> Harness {
        var h = Harness { $0.upstreamSTLS = true }
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        return h
    }

    @Test("STLS to the upstream after its greeting, the client's lines held until TLS is up; the client never sees it")
    func upstreamSTLS() {
        var h = Self.upstreamSTLS()
        #expect(h.upstream("+OK ready\r\n") == ["client ← +OK ready\r\n", "upstream ← STLS\r\n"])
        #expect(h.client("CAPA\r\n") == [])
        #expect(h.upstream("+OK Begin TLS negotiation now\r\n") == ["start upstream TLS"])
        #expect(h.run { $0.upstreamTLSEstablished(version: "TLS 1.3", now: $1, into: &$2) } == ["upstream ← CAPA\r\n"])
        h.upstream("+OK\r\nSTLS\r\nUSER\r\n.\r\n")
        #expect(h.toClient == "+OK ready\r\n+OK\r\nUSER\r\n.\r\n", "\(h.toClient)")
        #expect(h.client("STLS\r\n") == ["client ← -ERR STLS is not offered here\r\n"])
        #expect(h.upstreamWrites == ["STLS\r\n", "CAPA\r\n"])
    }

    @Test("an upstream that refuses STLS: the client is told the gateway could not get through, nothing goes on")
    func upstreamRefusesSTLS() {
        var h = Self.upstreamSTLS()
        h.upstream("+OK ready\r\n")
        h.client("USER alice\r\n")
        #expect(h.upstream("-ERR no TLS here\r\n") == ["close upstream"])
        #expect(
            h.run { $0.upstreamClosed(now: $1, into: &$2) }.first
                == "client ← -ERR [SYS/TEMP] the gateway could not make a secure connection to upstream up:110\r\n"
        )
        #expect(h.upstreamWrites == ["STLS\r\n"])
    }
}
