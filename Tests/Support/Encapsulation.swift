/// Outer headers for synthetic captures: the tunnels real captures hold, built around an inner packet.
/// Checksums are left 0 (tshark does not check them by default, nor does popgate).
public enum Encapsulation {
    public static func ethernet(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, UInt8(type >> 8), UInt8(type & 0xFF)] + payload
    }

    /// An IPv4 header from 192.0.2.1 to 192.0.2.2 (the tunnel's ends) around `payload`.
    public static func ipv4(
        _ proto: UInt8,
        _ payload: [UInt8],
        from: [UInt8] = [192, 0, 2, 1],
        to: [UInt8] = [192, 0, 2, 2]
    ) -> [UInt8] {
        let length = 20 + payload.count
        return [0x45, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0, 0x40, 0, 64, proto, 0, 0] + from + to + payload
    }

    public static func udp(_ source: UInt16, _ destination: UInt16, _ payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return [UInt8(source >> 8), UInt8(source & 0xFF), UInt8(destination >> 8), UInt8(destination & 0xFF)]
            + [UInt8(length >> 8), UInt8(length & 0xFF), 0, 0] + payload
    }

    static func be32(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// The EtherType for an inner IP packet, by its version.
    static func type(of ip: [UInt8]) -> UInt16 { ip.first.map { $0 >> 4 == 6 ? 0x86DD : 0x0800 } ?? 0x0800 }

    /// Ethernet, outer IPv4, UDP 4789, VXLAN with `vni`, inner Ethernet, the packet.
    public static func vxlan(_ vni: UInt32, _ ip: [UInt8]) -> [UInt8] {
        let header: [UInt8] = [0x08, 0, 0, 0, UInt8(vni >> 16), UInt8(vni >> 8 & 0xFF), UInt8(vni & 0xFF), 0]
        return ethernet(0x0800, ipv4(17, udp(40000, 4789, header + ethernet(type(of: ip), ip))))
    }

    /// Ethernet, outer IPv4, GRE with a key, the packet.
    public static func gre(key: UInt32, _ ip: [UInt8]) -> [UInt8] {
        let t = type(of: ip)
        return ethernet(0x0800, ipv4(47, [0x20, 0x00, UInt8(t >> 8), UInt8(t & 0xFF)] + be32(key) + ip))
    }

    /// Ethernet, outer IPv4, GRE with a sequence number, ERSPAN type II with `session`, the mirrored frame.
    public static func erspan(session: UInt16, _ ip: [UInt8]) -> [UInt8] {
        let gre: [UInt8] = [0x10, 0x00, 0x88, 0xBE] + be32(1)
        let erspan: [UInt8] = [0x10, 0x00, UInt8(session >> 8 & 0x03), UInt8(session & 0xFF), 0, 0, 0, 0]
        return ethernet(0x0800, ipv4(47, gre + erspan + ethernet(type(of: ip), ip)))
    }

    /// Ethernet, MPLS labels (the last at the bottom of the stack), the packet.
    public static func mpls(_ labels: [UInt32], _ ip: [UInt8]) -> [UInt8] {
        var stack: [UInt8] = []
        for (index, label) in labels.enumerated() {
            stack += be32(label << 12 | (index == labels.count - 1 ? 0x100 : 0) | 64)
        }
        return ethernet(0x8847, stack + ip)
    }

    /// Ethernet, outer IPv4, UDP 1701, an L2TPv2 data message with `session` (length field set), PPP, the packet.
    public static func l2tp(session: UInt16, _ ip: [UInt8]) -> [UInt8] {
        let ppp: [UInt8] = [0xFF, 0x03, 0x00, ip.first.map { $0 >> 4 == 6 ? 0x57 : 0x21 } ?? 0x21] + ip
        let length = 8 + ppp.count
        let header: [UInt8] = [
            0x40, 0x02, UInt8(length >> 8), UInt8(length & 0xFF), 0, 1, UInt8(session >> 8), UInt8(session & 0xFF),
        ]
        return ethernet(0x0800, ipv4(17, udp(1701, 1701, header + ppp)))
    }

    /// Ethernet, outer IPv4, UDP 2152, a GTP-U G-PDU with `teid`, the packet.
    public static func gtpu(teid: UInt32, _ ip: [UInt8]) -> [UInt8] {
        let header: [UInt8] = [0x30, 0xFF, UInt8(ip.count >> 8), UInt8(ip.count & 0xFF)] + be32(teid)
        return ethernet(0x0800, ipv4(17, udp(2152, 2152, header + ip)))
    }

    /// Ethernet, outer IPv4 with protocol 4 (IPv4 inside) or 41 (IPv6 inside: 6in4), the packet.
    public static func ipInIP(_ ip: [UInt8]) -> [UInt8] {
        ethernet(0x0800, ipv4(ip.first.map { $0 >> 4 == 6 ? 41 : 4 } ?? 4, ip))
    }
}
