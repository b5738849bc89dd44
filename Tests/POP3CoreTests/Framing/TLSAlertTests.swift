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

    /// The server's alert after STLS, then octets of its own (fuzz-conversation's finding): fed whole it was said,
    /// fed an octet at a time it was not (the first read of one octet decided "not TLS", later reads were looked at
    /// only from their start). An alert that begins inside a read, behind another record, was never said.
    @Test(
        "an alert in clear is said however the octets arrive: whole, an octet at a time, or behind another record"
    )
    func alertAcrossReads() {
        let alert: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 48]
        // A handshake record of four octets before it, then octets that are not a record header of an alert.
        let behind: [UInt8] = [0x16, 0x03, 0x03, 0x00, 0x04, 0x0B, 0x00, 0x00, 0x00] + alert
        for (stream, cuts) in [
            (alert + [0x9C, 0x9C], [1]), (alert, [7]), (behind, [1]), (behind, [16]), (behind, [3, 5]),
        ] {
            for cut in cuts {
                var machine = ConversationMachine()
                var events: [ConversationEvent] = []
                machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), at: 0, into: &events)
                machine.clientSent(ByteBuffer(string: "STLS\r\n"), at: 0, into: &events)
                machine.serverSent(ByteBuffer(string: "+OK Begin TLS\r\n"), at: 0, into: &events)
                machine.clientSent(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x00]), at: 0, into: &events)
                events.removeAll()
                var at = 0
                while at < stream.count {
                    let end = min(at + cut, stream.count)
                    machine.serverSent(ByteBuffer(bytes: stream[at..<end]), at: 0, into: &events)
                    at = end
                }
                let notes = events.compactMap { if case .annotation(.server, let text) = $0 { text } else { nil } }
                #expect(notes.count == 1, "\(stream.count) octets in reads of \(cut): \(notes)")
                #expect(notes.first?.contains("a fatal alert, unknown_ca") == true)
            }
        }
    }

    @Test("a record whose body holds an alert's octets is passed over; an alert is said once its last octet comes")
    func noAlertInside() {
        var walker = TLSRecordWalker()
        // Application data whose body holds an alert's octets: passed over with its record.
        #expect(
            walker.walk(ByteBuffer(bytes: [0x17, 0x03, 0x03, 0x00, 0x07, 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 48]))
                == nil
        )
        #expect(walker.walk(ByteBuffer(bytes: [0x15, 0x03, 0x03, 0x00, 0x02, 0x02])) == nil)
        #expect(
            walker.walk(ByteBuffer(bytes: [40])).map { ($0.fatal, $0.name, $0.end) }! == (true, "handshake_failure", 1)
        )
    }
}
