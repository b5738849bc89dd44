import POP3Capture
import PopgateTestSupport
import Testing

/// The decoder on single packets: what each tunnel yields, and what it names when it cannot decode.
@Suite("Packet decoder: tunnels and what is not decoded")
struct TunnelDecoderTests {
    /// A TCP SYN from 10.0.0.1:40000 to 10.0.0.2:110.
    static let inner: [UInt8] = {
        let tcp: [UInt8] = [0x9C, 0x40, 0, 110, 0, 0, 3, 0xE8, 0, 0, 0, 0, 0x50, 0x02, 0xFF, 0xFF, 0, 0, 0, 0]
        return Encapsulation.ipv4(6, tcp, from: [10, 0, 0, 1], to: [10, 0, 0, 2])
    }()

    static func decoded(_ frame: [UInt8]) -> PacketDecoder.Decoded { PacketDecoder.decode(frame, linkType: 1) }

    @Test("each tunnel yields the inner segment, named by its innermost tunnel; ids make different keys")
    func tunnels() throws {
        let cases: [([UInt8], [UInt8], String)] = [
            (Encapsulation.vxlan(42, Self.inner), Encapsulation.vxlan(43, Self.inner), "VXLAN 42"),
            (Encapsulation.gre(key: 7, Self.inner), Encapsulation.gre(key: 8, Self.inner), "GRE key 7"),
            (
                Encapsulation.erspan(session: 5, Self.inner), Encapsulation.erspan(session: 6, Self.inner),
                "ERSPAN session 5"
            ),
            (Encapsulation.mpls([16, 100], Self.inner), Encapsulation.mpls([17, 100], Self.inner), "MPLS label 100"),
            (Encapsulation.l2tp(session: 9, Self.inner), Encapsulation.l2tp(session: 10, Self.inner), "L2TP session 9"),
            (Encapsulation.gtpu(teid: 0x1F, Self.inner), Encapsulation.gtpu(teid: 0x20, Self.inner), "GTP-U TEID 0x1f"),
        ]
        for (one, other, name) in cases {
            let a = try #require(Self.decoded(one).segment, "\(name)")
            let b = try #require(Self.decoded(other).segment, "\(name)")
            #expect(a.source.description == "10.0.0.1:40000" && a.destination.port == 110 && a.syn, "\(name)")
            #expect(a.tunnelName?.description == name)
            #expect(a.tunnel != 0 && a.tunnel != b.tunnel, "\(name)")
        }
        let plain = try #require(Self.decoded(Encapsulation.ethernet(0x0800, Self.inner)).segment)
        #expect(plain.tunnel == 0 && plain.tunnelName == nil)
        let ipip = try #require(Self.decoded(Encapsulation.ipInIP(Self.inner)).segment)
        #expect(ipip.tunnelName?.description == "IP-in-IP")
    }

    @Test("what is not decoded is named: ARP, plain UDP, ICMP, GRE version 1, L2TP control, GTP signalling, nesting")
    func skipped() {
        func what(_ frame: [UInt8]) -> String? {
            if case .skipped(let text) = Self.decoded(frame) { return text }
            return nil
        }
        #expect(what(Encapsulation.ethernet(0x0806, [UInt8](repeating: 0, count: 28))) == "ARP")
        #expect(
            what(Encapsulation.ethernet(0x0800, Encapsulation.ipv4(17, Encapsulation.udp(5353, 53, [1, 2])))) == "UDP"
        )
        #expect(what(Encapsulation.ethernet(0x0800, Encapsulation.ipv4(1, [8, 0, 0, 0]))) == "ICMP")
        #expect(
            what(Encapsulation.ethernet(0x0800, Encapsulation.ipv4(47, [0x30, 0x81, 0x88, 0x0B, 0, 0, 0, 0])))
                == "GRE version 1 (PPTP)"
        )
        let control = Encapsulation.udp(1701, 1701, [0xC8, 0x02, 0, 12, 0, 1, 0, 0, 0, 0, 0, 0])
        #expect(what(Encapsulation.ethernet(0x0800, Encapsulation.ipv4(17, control))) == "L2TP control message")
        let echo = Encapsulation.udp(2152, 2152, [0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(what(Encapsulation.ethernet(0x0800, Encapsulation.ipv4(17, echo))) == "GTP-U signalling (not a G-PDU)")
        var nested = Self.inner
        for _ in 0..<12 { nested = Encapsulation.ipv4(4, nested) }
        #expect(what(Encapsulation.ethernet(0x0800, nested)) == "tunnels nested too deep")
        var fragment = Encapsulation.ipv4(6, [UInt8](repeating: 0, count: 20))
        fragment[6] = 0x20  // more fragments
        #expect(what(Encapsulation.ethernet(0x0800, fragment)) == "IPv4 fragment")
    }
}
