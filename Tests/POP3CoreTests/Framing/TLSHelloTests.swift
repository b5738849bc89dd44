import NIOCore
import Testing

@testable import POP3Core

@Suite("TLS hellos read in passing")
struct TLSHelloTests {
    /// A ServerHello choosing `cipher`, in one TLS 1.2 record.
    static func serverHello(cipher: UInt16) -> [UInt8] {
        let body: [UInt8] =
            [0x03, 0x03] + [UInt8](repeating: 7, count: 32) + [0] + [UInt8(cipher >> 8), UInt8(cipher & 0xFF), 0]
        let message: [UInt8] = [2, 0, 0, UInt8(body.count)] + body
        return [0x16, 0x03, 0x03, 0, UInt8(message.count)] + message
    }

    /// A ClientHello naming `name`, in one record.
    static func clientHello(name: String) -> [UInt8] {
        let host = Array(name.utf8)
        let list: [UInt8] = [0, UInt8(host.count >> 8), UInt8(host.count & 0xFF)] + host
        let sni: [UInt8] = [0, 0, 0, UInt8(list.count + 2), 0, UInt8(list.count)] + list
        let body: [UInt8] =
            [0x03, 0x03] + [UInt8](repeating: 1, count: 32) + [0] + [0, 2, 0x13, 0x01] + [1, 0]
            + [0, UInt8(sni.count)] + sni
        let message: [UInt8] = [1, 0, 0, UInt8(body.count)] + body
        return [0x16, 0x03, 0x01, 0, UInt8(message.count)] + message
    }

    /// Every prefix short of the record is `.incomplete`; the whole is the verdict, whatever follows it.
    static func verdictByPrefix(_ bytes: [UInt8]) -> TLSHello.Result {
        for count in 0..<bytes.count {
            let result = TLSHello.parse(bytes.prefix(count))
            if result != .incomplete { return result }
        }
        return TLSHello.parse(bytes)
    }

    @Test("a ClientHello is read once its first record is whole, the same way however it was cut")
    func clientHelloPrefixes() {
        let hello = Self.clientHello(name: "pop.example.org")
        guard case .hello(let read) = TLSHello.parse(hello) else {
            Issue.record("not read")
            return
        }
        #expect(read.kind == .clientHello)
        #expect(read.serverName == "pop.example.org")
        for count in 0..<hello.count { #expect(TLSHello.parse(hello.prefix(count)) == .incomplete) }
        #expect(TLSHello.parse(hello + [0x17, 0x03, 0x03]) == .hello(read))
    }

    /// fuzz-conversation's finding: a record of one octet, its "hello" going on past it. Read whole, the parser
    /// had read the octets after the record and found a ServerHello with a weak cipher; read octet by octet, none.
    @Test("a record too short for a handshake message, or longer than TLS allows, is not a hello, cut or whole")
    func shortAndLongRecords() {
        var tooShort: [UInt8] = [0x16, 0x03, 0x01, 0x00, 0x01, 0x02]
        tooShort += Self.serverHello(cipher: 0x0024).dropFirst(6)
        #expect(TLSHello.parse(tooShort) == .notTLS)
        #expect(Self.verdictByPrefix(tooShort) == .notTLS)
        let tooLong: [UInt8] = [0x16, 0x03, 0x03, 0x40, 0x01, 0x01, 0x00, 0x40, 0x00]
        #expect(TLSHello.parse(tooLong) == .notTLS)
    }

    @Test("after STLS, a ServerHello sent by the client is not read as the server's choice, whole or byte by byte")
    func helloFromTheWrongSide() {
        let script = Script(
            "a client's ServerHello",
            [
                .server("+OK ready\r\n"), .client("STLS\r\n"), .server("+OK Begin TLS\r\n"),
                .clientBytes(Self.serverHello(cipher: 0x0024)), .clientClose, .serverClose,
            ]
        )
        let whole = script.run()
        #expect(whole.coalesced == script.run(byteByByte: true).coalesced)
        #expect(!whole.contains { if case .anomaly = $0 { true } else { false } })
        #expect(!whole.contains { if case .tls = $0 { true } else { false } })
    }

    @Test("the server's real ServerHello with a weak cipher is still the server's finding")
    func weakCipherFromServer() {
        let script = Script(
            "a weak ServerHello",
            [
                .server("+OK ready\r\n"), .client("STLS\r\n"), .server("+OK Begin TLS\r\n"),
                .clientBytes(Self.clientHello(name: "pop.example.org")), .serverBytes(Self.serverHello(cipher: 0x0024)),
            ]
        )
        let events = script.run()
        #expect(events.coalesced == script.run(byteByByte: true).coalesced)
        let findings = events.compactMap { if case .anomaly(let anomaly) = $0 { anomaly } else { nil } }
        #expect(findings.count == 1)
        #expect(findings.first?.side == .server)
        #expect(findings.first?.reason.contains("weak cipher suite 0x24") == true)
    }
}
