import NIOCore
import Testing

@testable import POP3Core

/// Legal client and server behaviour that must stay silent, and findings that say only what was seen.
@Suite("Conversation: no false alarms on legal behaviour")
struct FalseAlarmTests {
    static func run(_ steps: [(Bool, String)]) -> [Anomaly] {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        for (fromClient, text) in steps {
            if fromClient {
                machine.clientSent(ByteBuffer(string: text), into: &events)
            } else {
                machine.serverSent(ByteBuffer(string: text), into: &events)
            }
        }
        return events.compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
    }

    @Test("STLS without CAPA first is legal (RFC 2595 §4): no R34")
    func stlsWithoutCAPA() {
        let findings = Self.run([(false, "+OK hi\r\n"), (true, "STLS\r\n"), (false, "-ERR not now\r\n")])
        #expect(!findings.contains { $0.rule == .stlsAdvertised }, "\(findings)")
    }

    @Test("pipelining: says whether CAPA was asked at all, and is interop")
    func pipeliningWording() {
        let unasked = Self.run([(false, "+OK hi\r\n"), (true, "USER a\r\nPASS b\r\n"), (false, "+OK\r\n+OK\r\n")])
        let r30 = unasked.first { $0.rule == .pipelining }
        #expect(r30?.reason == "the client pipelined \"PASS\" without having seen PIPELINING in CAPA (it did not ask)")
        #expect(r30?.severity == .interop)
        #expect(!(r30?.reason.contains("did not advertise") ?? true), "it says what was seen, not what the server did")
        let asked = Self.run([
            (false, "+OK hi\r\n"), (true, "CAPA\r\n"), (false, "+OK\r\nUSER\r\n.\r\n"), (true, "USER a\r\nPASS b\r\n"),
            (false, "+OK\r\n+OK\r\n"),
        ])
        #expect(
            asked.first { $0.rule == .pipelining }?.reason
                == "the client pipelined \"PASS\" although the server's CAPA does not list PIPELINING"
        )
        // CAPA asked, its reply not in yet (zeek/pop3.pcap's CAPA then QUIT): it asked, it just did not wait.
        let waiting = Self.run([
            (false, "+OK hi\r\n"), (true, "CAPA\r\nQUIT\r\n"), (false, "+OK\r\nUSER\r\n.\r\n+OK\r\n"),
        ])
        #expect(
            waiting.first { $0.rule == .pipelining }?.reason
                == "the client pipelined \"QUIT\" before CAPA's reply could say whether PIPELINING is offered"
        )
    }

    @Test("CAPA listed inside CAPA (Dovecot) is not an unknown capability; unknown names are interop")
    func capaInCAPA() {
        let findings = Self.run([
            (false, "+OK hi\r\n"), (true, "CAPA\r\n"), (false, "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nNONSENSE\r\n.\r\n"),
        ])
        let r29 = findings.filter { $0.rule == .capability }
        #expect(r29.count == 1 && r29[0].reason.hasPrefix("NONSENSE") && r29[0].severity == .interop, "\(findings)")
    }
}
