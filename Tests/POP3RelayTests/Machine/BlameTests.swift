import NIOCore
import POP3Core
import Testing

@testable import POP3Relay

/// Who is blamed when the gateway itself ends a session, and what is said of traffic the gateway could not
/// read (TLS passed through after STLS).
@Suite("Relay machine: blame where it belongs")
struct BlameTests {
    static func events(_ h: Harness) -> [ConversationEvent] {
        h.all.flatMap { action -> [ConversationEvent] in
            guard case .record(let events) = action else { return [] }
            return events
        }
    }

    @Test("TLS passed through after STLS: encrypted, not judged; the upstream's close is not 'unasked'")
    func passThroughTLS() {
        var h = Harness.relaying()
        h.client("STLS\r\n")
        h.upstream("+OK go ahead\r\n")
        h.client("\u{16}\u{3}\u{1}\u{0}\u{5}hello")
        h.upstream("\u{16}\u{3}\u{3}\u{0}\u{5}world")
        h.client("\u{17}\u{3}\u{3}\u{0}\u{5}12345")
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.insideTLS.rawValue)"])
        let events = Self.events(h)
        let anomalies = events.compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        #expect(!anomalies.contains { $0.rule == .unexpectedServerData }, "\(anomalies)")
        #expect(h.machine.conversation.state != .tlsNegotiation)
        let notes = events.compactMap { if case .annotation(_, let text) = $0 { text } else { nil } }
        #expect(!notes.contains { $0.contains("without QUIT") }, "\(notes)")
    }

    @Test("the client vanished mid-RETR: the reply the gateway cut is the gateway's doing, not the server's R53")
    func gatewayCutTheReply() {
        var h = Harness.relaying()
        h.client("USER a\r\nPASS b\r\nRETR 1\r\n")
        h.upstream("+OK\r\n+OK\r\n+OK 100 octets\r\nSubject: x\r\n\r\nhalf of it")
        h.run { $0.clientClosed(now: $1, into: &$2) }
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        let anomalies = Self.events(h).compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        #expect(!anomalies.contains { $0.rule == .unexpectedServerData && $0.side == .server }, "\(anomalies)")
        #expect(anomalies.contains { $0.rule == .unexpectedServerData && $0.side == .gateway && $0.severity == .note })
    }

    @Test("a client that stopped reading is not 'idle': the session ends saying the client stalled")
    func stalledIsNotIdle() {
        var h = Harness.relaying { $0.idleTimeout = .seconds(60) }
        h.client("USER a\r\nPASS b\r\nRETR 1\r\n")
        h.upstream("+OK\r\n+OK\r\n+OK 100 octets\r\nSubject: x\r\n")
        h.run { machine, _, actions in machine.writabilityChanged(.client, writable: false, into: &actions) }
        let closing = h.advance(.seconds(61))
        #expect(closing.contains("close client") && closing.contains("close upstream"))
        h.run { $0.clientClosed(now: $1, into: &$2) }
        #expect(h.run { $0.upstreamClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.clientStalled.rawValue)"])
        var idle = Harness.relaying { $0.idleTimeout = .seconds(60) }
        _ = idle.advance(.seconds(61))
        idle.run { $0.clientClosed(now: $1, into: &$2) }
        #expect(idle.run { $0.upstreamClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.idleTimeout.rawValue)"])
    }
}

extension BlameTests {
    @Test("TLS from a client on a plaintext port without a certificate: the octets said equal the octets read")
    func octetsOfUnreadTLS() {
        var h = Harness.relaying { $0.annotate = true }
        let hello = "\u{16}\u{3}\u{1}\u{0}\u{20}" + String(repeating: "h", count: 32)
        h.client(hello)
        h.client("more TLS octets")
        h.upstream("-ERR what\r\n")
        h.run { $0.clientClosed(now: $1, into: &$2) }
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        let opaque = Self.events(h).reduce(into: [POP3Core.Side: Int]()) { counts, event in
            if case .opaque(let side, let octets) = event { counts[side, default: 0] += octets }
        }
        let said = opaque[.client] ?? 0
        #expect(said == h.machine.clientOctets, "opaque \(said), read \(h.machine.clientOctets)")
    }
}
