import NIOCore
import Testing

@testable import POP3Core

@Suite("TLS alerts in clear")
struct TLSAlertTests {
    @Test("a two-octet alert record is read with its level and name; anything else is not an alert in clear")
    func alerts() {
        #expect(TLSHello.alert([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 48])! == (true, "unknown_ca"))
        #expect(TLSHello.alert([0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0])! == (false, "close_notify"))
        // An encrypted alert (TLS 1.2, with its MAC) is longer; TLS 1.3 sends it as application data.
        #expect(TLSHello.alert([0x15, 0x03, 0x03, 0x00, 0x1A, 0x00, 0x00]) == nil)
        #expect(TLSHello.alert([0x17, 0x03, 0x03, 0x00, 0x02, 0x02, 48]) == nil)
        #expect(TLSHello.alert([0x15, 0x03, 0x03, 0x00, 0x02, 0x02]) == nil)
    }

    @Test("after STLS, the client's fatal alert is the client's note, and no finding against the server")
    func clientAlertInMachine() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), at: 0, into: &events)
        machine.clientSent(ByteBuffer(string: "STLS\r\n"), at: 0, into: &events)
        machine.serverSent(ByteBuffer(string: "+OK Begin TLS\r\n"), at: 0, into: &events)
        events.removeAll()
        machine.clientSent(ByteBuffer(bytes: [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 42]), at: 0, into: &events)
        let notes = events.compactMap { if case .annotation(let side, let text) = $0 { (side, text) } else { nil } }
        #expect(notes.count == 1)
        #expect(notes.first?.0 == .client)
        #expect(notes.first?.1.contains("bad_certificate: it did not accept the server's certificate") == true)
        #expect(!events.contains { if case .anomaly = $0 { true } else { false } })
    }
}
