import NIOCore
import POP3Core
import Testing

/// The PROXY protocol header reader, on octets: both versions, every split, every way a header is wrong.
@Suite("PROXY protocol header")
struct ProxyHeaderTests {
    /// A version 2 header: command (0 LOCAL, 1 PROXY), family and protocol, addresses, TLVs.
    static func v2(command: UInt8 = 1, family: UInt8 = 0x11, addresses: [UInt8], tlvs: [UInt8] = []) -> [UInt8] {
        let body = addresses + tlvs
        return ProxyHeader.signature + [0x20 | command, family, UInt8(body.count >> 8), UInt8(body.count & 0xFF)]
            + body
    }

    static let v4Addresses: [UInt8] = [192, 0, 2, 7, 198, 51, 100, 1, 0xC8, 0x22, 0, 110]

    static func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        [type, UInt8(value.count >> 8), UInt8(value.count & 0xFF)] + value
    }

    static func header(_ bytes: [UInt8]) -> ProxyHeader? {
        if case .header(let header) = ProxyHeader.parse(bytes) { return header }
        return nil
    }

    static func invalid(_ bytes: [UInt8]) -> String? {
        if case .invalid(let why) = ProxyHeader.parse(bytes) { return why }
        return nil
    }

    @Test("v1 TCP4, TCP6 and UNKNOWN; the header's length is where the client's octets begin")
    func version1() throws {
        let line = Array("PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\nCAPA\r\n".utf8)
        let header = try #require(Self.header(line))
        #expect(header.version == .v1)
        #expect(header.source == .init(address: "192.0.2.7", port: 51234))
        #expect(header.destination?.description == "198.51.100.1:110")
        #expect(Array(line[header.length...]) == Array("CAPA\r\n".utf8))
        let six = try #require(Self.header(Array("PROXY TCP6 2001:DB8:0:0::7 2001:db8::1 1 995\r\n".utf8)))
        #expect(six.source?.address == "2001:db8::7" && six.source?.description == "[2001:db8::7]:1")
        for unknown in ["PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"] {
            let header = try #require(Self.header(Array(unknown.utf8)))
            #expect(header.source == nil && header.length == unknown.utf8.count)
        }
    }

    @Test("v1 addresses come back in canonical text, at the edges of each octet and port")
    func version1Canonical() throws {
        let line = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"
        let header = try #require(Self.header(Array(line.utf8)))
        #expect(header.source == .init(address: "0.0.0.0", port: 0))
        #expect(header.destination == .init(address: "255.255.255.255", port: 65535))
        let mixed = try #require(Self.header(Array("PROXY TCP4 10.0.100.9 1.20.199.200 7 80\r\n".utf8)))
        #expect(mixed.source?.address == "10.0.100.9" && mixed.destination?.address == "1.20.199.200")
        let mapped = try #require(Self.header(Array("PROXY TCP6 ::FFFF:192.0.2.7 :: 1 2\r\n".utf8)))
        #expect(mapped.source?.address == "::ffff:192.0.2.7" && mapped.destination?.address == "::")
    }

    @Test("read in place from a ByteBuffer, as the relay does, a header parses as from an array")
    func fromByteBuffer() {
        let line = Array("PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\nCAPA\r\n".utf8)
        let v2 = Self.v2(addresses: Self.v4Addresses, tlvs: Self.tlv(0x02, Array("mail.example".utf8)))
        for bytes in [line, v2, Array("PROXY TCP4 1.2".utf8), Array("CAPA\r\n".utf8)] {
            var buffer = ByteBuffer(bytes: [0x41] + bytes)
            buffer.moveReaderIndex(forwardBy: 1)
            #expect(ProxyHeader.parse(buffer.readableBytesView) == ProxyHeader.parse(bytes))
        }
    }

    @Test("a header split anywhere needs more data until its last octet, in both versions")
    func everySplit() {
        let v1 = Array("PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\n".utf8)
        let v2 = Self.v2(addresses: Self.v4Addresses, tlvs: Self.tlv(0x04, [0, 0, 0]))
        for header in [v1, v2] {
            for cut in 0..<header.count {
                #expect(ProxyHeader.parse(header[..<cut]) == .needMoreData, "cut at \(cut)")
            }
            #expect(Self.header(header)?.source?.address == "192.0.2.7")
        }
    }

    @Test("v1 that is wrong: too long, no CR, another protocol, addresses and ports out of form")
    func version1Errors() {
        let cases: [(String, String)] = [
            ("PROXY TCP4 " + String(repeating: "1", count: 100), "longer than 107"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 1 110\n", "CRLF"),
            ("PROXY UDP4 192.0.2.7 198.51.100.1 1 110\r\n", "not TCP4, TCP6 or UNKNOWN"),
            ("PROXY TCP4 2001:db8::7 198.51.100.1 1 110\r\n", "not IPv4"),
            ("PROXY TCP6 192.0.2.7 2001:db8::1 1 110\r\n", "not IPv6"),
            ("PROXY TCP4 192.0.2.256 198.51.100.1 1 110\r\n", "not IPv4"),
            ("PROXY TCP4 192.0.2.07 198.51.100.1 1 110\r\n", "not IPv4"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 65536 110\r\n", "port"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 01 110\r\n", "port"),
            ("PROXY TCP4 192.0.2.7  198.51.100.1 1 110\r\n", "2 addresses and 2 ports"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", "2 addresses and 2 ports"),
            ("PROXX TCP4", "no PROXY header"),
            // The C library reads a NUL as the address's end: the octets after it must not be ignored.
            ("PROXY TCP4 192.0.2.7\u{0}9 198.51.100.1 1 110\r\n", "not IPv4"),
            ("PROXY TCP6 2001:db8::7\u{0}:1 2001:db8::1 1 110\r\n", "not IPv6"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 1 11a\r\n", "port"),
            ("PROXY TCP4 192.0.2.7 198.51.100.1 1 \r\n", "port"),
            ("PROXY \r\n", "not TCP4, TCP6 or UNKNOWN"),
        ]
        for (text, why) in cases {
            let reason = Self.invalid(Array(text.utf8))
            #expect(reason?.contains(why) == true, "\(text.debugDescription): \(reason ?? "accepted")")
        }
    }

    @Test("no header at all: a POP3 command, a TLS ClientHello, nothing yet")
    func missing() {
        #expect(
            Self.invalid(Array("USER alice\r\n".utf8))
                == "no PROXY header: the connection began with \"USER alice\\r\\n\""
        )
        #expect(Self.invalid([0x16, 0x03, 0x01, 0x02, 0x00])?.hasPrefix("no PROXY header") == true)
        #expect(ProxyHeader.parse([UInt8]()) == .needMoreData)
        #expect(ProxyHeader.parse(Array("PRO".utf8)) == .needMoreData)
        #expect(Self.invalid([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B]) != nil)
    }

    @Test("v2 PROXY over IPv4 and IPv6 with TLVs: the TLS one and the authority read, the rest skipped")
    func version2() throws {
        let ssl = Self.tlv(
            0x20,
            [0x03, 0, 0, 0, 0] + Self.tlv(0x21, Array("TLSv1.3".utf8))
                + Self.tlv(0x23, Array("TLS_AES_256_GCM_SHA384".utf8))
        )
        let bytes =
            Self.v2(
                addresses: Self.v4Addresses,
                tlvs: Self.tlv(0x02, Array("pop.example.org".utf8)) + Self.tlv(0x05, [1, 2, 3]) + ssl
            ) + Array("+rest".utf8)
        let header = try #require(Self.header(bytes))
        #expect(header.version == .v2 && header.source?.description == "192.0.2.7:51234")
        #expect(header.destination?.description == "198.51.100.1:110")
        #expect(header.authority == "pop.example.org")
        #expect(header.tls == .init(version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", verifiedCertificate: true))
        #expect(Array(bytes[header.length...]) == Array("+rest".utf8))
        var six: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [7]
        six += [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [1] + [0, 80, 0x03, 0xE3]
        let v6 = try #require(Self.header(Self.v2(family: 0x21, addresses: six)))
        #expect(v6.source?.description == "[2001:db8::7]:80" && v6.destination?.port == 995)
    }

    @Test("v2 LOCAL (a balancer's health check) and UNSPEC carry no client; UDP is not a TCP client")
    func version2Local() throws {
        let local = try #require(Self.header(Self.v2(command: 0, family: 0x11, addresses: Self.v4Addresses)))
        #expect(local.source == nil)
        let unspec = try #require(Self.header(Self.v2(command: 0, family: 0x00, addresses: [])))
        #expect(unspec.source == nil && unspec.length == 16)
        let udp = try #require(Self.header(Self.v2(family: 0x12, addresses: Self.v4Addresses)))
        #expect(udp.source == nil)
    }

    @Test("v2 that is wrong: version, command, family, short addresses, TLVs overrunning, oversized")
    func version2Errors() {
        var badVersion = Self.v2(addresses: Self.v4Addresses)
        badVersion[12] = 0x31
        #expect(Self.invalid(badVersion)?.contains("of version 3") == true)
        var badCommand = Self.v2(addresses: Self.v4Addresses)
        badCommand[12] = 0x22
        #expect(Self.invalid(badCommand)?.contains("command 2") == true)
        #expect(Self.invalid(Self.v2(family: 0x41, addresses: Self.v4Addresses))?.contains("0x41") == true)
        #expect(Self.invalid(Self.v2(addresses: [1, 2, 3]))?.contains("shorter than its addresses") == true)
        #expect(Self.invalid(Self.v2(addresses: Self.v4Addresses, tlvs: [0x02, 0, 9, 1]))?.contains("overrun") == true)
        let huge = ProxyHeader.signature + [0x21, 0x11, 0xFF, 0xFF]
        #expect(Self.invalid(huge)?.contains("over the limit of 1024") == true, "refused from its length, not read")
    }
}
