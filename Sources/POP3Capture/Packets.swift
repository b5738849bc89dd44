import NIOCore

/// An IP address as it came off the wire, printable; kept in two integers so packets need no allocation.
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isIPv6: Bool

    /// From 4 or 16 octets at `offset` of `b`.
    init(_ b: UnsafeBufferPointer<UInt8>, at offset: Int, length: Int) {
        func word(_ from: Int, _ count: Int) -> UInt64 {
            var value: UInt64 = 0
            for i in 0..<count { value = value << 8 | UInt64(b[from + i]) }
            return value
        }
        if length == 4 {
            self.high = 0
            self.low = word(offset, 4)
            self.isIPv6 = false
        } else {
            self.high = word(offset, 8)
            self.low = word(offset + 8, 8)
            self.isIPv6 = true
        }
    }

    public var bytes: [UInt8] {
        let count = self.isIPv6 ? 16 : 4
        var all: [UInt8] = []
        for word in [self.high, self.low] {
            for shift in stride(from: 56, through: 0, by: -8) {
                all.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return Array(all.suffix(count))
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        (a.isIPv6 ? 1 : 0, a.high, a.low) < (b.isIPv6 ? 1 : 0, b.high, b.low)
    }

    public var description: String {
        let bytes = self.bytes
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var groups: [String] = []
        for i in stride(from: 0, to: bytes.count, by: 2) {
            groups.append(String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16))
        }
        // The longest run of zero groups becomes "::" (RFC 5952).
        var best = (start: -1, length: 0)
        var i = 0
        while i < groups.count {
            if groups[i] == "0" {
                var j = i
                while j < groups.count, groups[j] == "0" { j += 1 }
                if j - i > best.length, j - i > 1 { best = (i, j - i) }
                i = j
            } else {
                i += 1
            }
        }
        guard best.start >= 0 else { return groups.joined(separator: ":") }
        let head = groups[..<best.start].joined(separator: ":")
        let tail = groups[(best.start + best.length)...].joined(separator: ":")
        return head + "::" + tail
    }
}

/// One side of a TCP connection.
public struct TCPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: Int

    public var description: String {
        self.address.isIPv6 ? "[\(self.address)]:\(self.port)" : "\(self.address):\(self.port)"
    }
}

/// A TCP segment with what the capture reader needs of its headers.
public struct TCPSegment: Sendable {
    public var source: TCPEndpoint
    public var destination: TCPEndpoint
    public var sequence: UInt32
    /// What the sender has received of the other direction (valid with the ACK flag).
    public var acknowledgment: UInt32 = 0
    public var flags: UInt8
    public var payload: ByteBuffer
    /// The tunnels it came through, as one key (0 for none): two tunnels carrying the same inner addresses
    /// are two connections.
    public var tunnel: UInt64 = 0
    /// The innermost tunnel, for people: `VXLAN 42`, `GRE key 7`, `GTP-U TEID 0x1f`.
    public var tunnelName: Tunnel?

    public var syn: Bool { self.flags & 0x02 != 0 }
    public var fin: Bool { self.flags & 0x01 != 0 }
    public var rst: Bool { self.flags & 0x04 != 0 }
    public var ack: Bool { self.flags & 0x10 != 0 }
}

/// An encapsulation a segment came through, and its own id where it has one.
public struct Tunnel: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable, Hashable {
        case gre = 1
        case erspan, vxlan, mpls, l2tp, gtpu, ipInIP, sixInFour
    }
    public var kind: Kind
    public var id: UInt32?

    public var description: String {
        let id = self.id.map { String($0) }
        switch self.kind {
        case .gre: return id.map { "GRE key \($0)" } ?? "GRE"
        case .erspan: return id.map { "ERSPAN session \($0)" } ?? "ERSPAN"
        case .vxlan: return "VXLAN \(id ?? "?")"
        case .mpls: return "MPLS label \(id ?? "?")"
        case .l2tp: return "L2TP session \(id ?? "?")"
        case .gtpu: return "GTP-U TEID \(self.id.map { "0x" + String($0, radix: 16) } ?? "?")"
        case .ipInIP: return "IP-in-IP"
        case .sixInFour: return "6in4"
        }
    }
}

/// Decodes link layers, IPv4/IPv6, the common tunnels (GRE with ERSPAN, VXLAN, MPLS, L2TPv2 with PPP,
/// GTP-U, IP-in-IP, 6in4) and TCP. What it does not decode it names, for the count at the end.
public enum PacketDecoder {
    public struct UnsupportedLinkType: Error, CustomStringConvertible {
        public var linkType: Int32
        public var description: String {
            "link type \(self.linkType) is not supported (Ethernet, Linux SLL/SLL2, BSD loopback and raw IP are)"
        }
    }

    /// What a packet held: a TCP segment, or what it was instead (`ARP`, `UDP`, `IPv4 fragment`, ...).
    public enum Decoded: Sendable {
        case tcp(TCPSegment)
        case skipped(String)

        public var segment: TCPSegment? {
            if case .tcp(let segment) = self { return segment }
            return nil
        }
    }

    /// The link types popgate reads (DLT values as libpcap reports them).
    public static func checkLinkType(_ linkType: Int32) throws {
        guard [0, 1, 12, 14, 101, 108, 113, 228, 229, 276].contains(linkType) else {
            throw UnsupportedLinkType(linkType: linkType)
        }
    }

    /// The TCP segment in `bytes`, if it holds one.
    public static func tcp(_ bytes: [UInt8], linkType: Int32) -> TCPSegment? {
        bytes.withUnsafeBufferPointer { self.decode($0, linkType: linkType).segment }
    }

    /// The TCP segment in `bytes` (libpcap's buffer, say); the payload is the one copy made.
    public static func tcp(_ bytes: UnsafeBufferPointer<UInt8>, linkType: Int32) -> TCPSegment? {
        self.decode(bytes, linkType: linkType).segment
    }

    public static func decode(_ bytes: [UInt8], linkType: Int32) -> Decoded {
        bytes.withUnsafeBufferPointer { self.decode($0, linkType: linkType) }
    }

    public static func decode(_ b: UnsafeBufferPointer<UInt8>, linkType: Int32) -> Decoded {
        var scratch: ByteBuffer? = nil
        return self.decode(b, linkType: linkType, reusing: &scratch)
    }

    /// As `decode`, writing the payload into `scratch`'s storage when nothing else holds it any more (the packet
    /// before's, say), so a packet costs no allocation. `scratch` is taken; the caller keeps the payload's buffer
    /// as the next one's scratch.
    static func decode(_ b: UnsafeBufferPointer<UInt8>, linkType: Int32, reusing scratch: inout ByteBuffer?) -> Decoded
    {
        var path = Path()
        path.scratch = scratch
        scratch = nil
        switch linkType {
        case 1:
            return self.ethernet(b, at: 0, path: &path)
        case 0, 108:
            // BSD loopback: a 4-byte address family, in the capturing host's order (NULL) or network order (LOOP).
            guard b.count >= 4 else { return .skipped("short loopback header") }
            let little = Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24
            let big = Int(b[3]) | Int(b[2]) << 8 | Int(b[1]) << 16 | Int(b[0]) << 24
            for family in [little, big] {
                if family == 2 { return self.ip(b, at: 4, version: 4, path: &path) }
                if [10, 24, 28, 30].contains(family) { return self.ip(b, at: 4, version: 6, path: &path) }
            }
            return .skipped("loopback family \(little)")
        case 113:  // Linux cooked (SLL): protocol at 14
            guard b.count >= 16 else { return .skipped("short SLL header") }
            return self.etherType(Int(b[14]) << 8 | Int(b[15]), b, at: 16, path: &path)
        case 276:  // Linux cooked v2 (SLL2): protocol at 0
            guard b.count >= 20 else { return .skipped("short SLL2 header") }
            return self.etherType(Int(b[0]) << 8 | Int(b[1]), b, at: 20, path: &path)
        case 12, 14, 101, 228, 229:  // raw IP
            return self.ipByVersion(b, at: 0, path: &path)
        default:
            return .skipped("link type \(linkType)")
        }
    }

    /// The tunnels passed so far.
    struct Path {
        var key: UInt64 = 0
        var innermost: Tunnel?
        var depth = 0
        var scratch: ByteBuffer?

        /// `bytes` in a buffer: the scratch one when it is free, a new one otherwise.
        mutating func payload(_ bytes: UnsafeBufferPointer<UInt8>) -> ByteBuffer {
            guard var buffer = self.scratch else { return ByteBuffer(bytes: bytes) }
            self.scratch = nil
            buffer.clear(minimumCapacity: bytes.count)
            buffer.writeBytes(bytes)
            return buffer
        }

        mutating func enter(_ tunnel: Tunnel) -> Bool {
            self.depth += 1
            self.key = (self.key &* 0x100_0000_01B3) ^ (UInt64(tunnel.kind.rawValue) << 32 | UInt64(tunnel.id ?? 0))
            self.innermost = tunnel
            // Tunnels inside tunnels, but not without end (a crafted packet could nest forever).
            return self.depth <= 8
        }
    }

    static func ethernet(_ b: UnsafeBufferPointer<UInt8>, at start: Int, path: inout Path) -> Decoded {
        // Any number of 802.1Q / 802.1ad tags.
        var offset = start + 12
        while offset + 2 <= b.count {
            let type = Int(b[offset]) << 8 | Int(b[offset + 1])
            if type == 0x8100 || type == 0x88A8 || type == 0x9100 {
                offset += 4
                continue
            }
            return self.etherType(type, b, at: offset + 2, path: &path)
        }
        return .skipped("short Ethernet frame")
    }

    static func etherType(_ type: Int, _ b: UnsafeBufferPointer<UInt8>, at offset: Int, path: inout Path) -> Decoded {
        switch type {
        case 0x0800: return self.ip(b, at: offset, version: 4, path: &path)
        case 0x86DD: return self.ip(b, at: offset, version: 6, path: &path)
        case 0x8847, 0x8848: return self.mpls(b, at: offset, path: &path)
        case 0x0806: return .skipped("ARP")
        case 0x88CC: return .skipped("LLDP")
        default: return .skipped(type < 0x0600 ? "802.3 frame (LLC)" : "EtherType 0x\(String(type, radix: 16))")
        }
    }

    static func ipByVersion(_ b: UnsafeBufferPointer<UInt8>, at offset: Int, path: inout Path) -> Decoded {
        guard offset < b.count else { return .skipped("empty packet") }
        switch b[offset] >> 4 {
        case 4: return self.ip(b, at: offset, version: 4, path: &path)
        case 6: return self.ip(b, at: offset, version: 6, path: &path)
        default: return .skipped("not IP (version \(b[offset] >> 4))")
        }
    }

    /// MPLS: labels until the bottom of the stack, then IPv4 or IPv6 by its version (a pseudowire's control
    /// word, 0, is Ethernet over MPLS).
    static func mpls(_ b: UnsafeBufferPointer<UInt8>, at start: Int, path: inout Path) -> Decoded {
        var offset = start
        while offset + 4 <= b.count {
            let entry =
                UInt32(b[offset]) << 24 | UInt32(b[offset + 1]) << 16 | UInt32(b[offset + 2]) << 8
                | UInt32(b[offset + 3])
            offset += 4
            guard path.enter(Tunnel(kind: .mpls, id: entry >> 12)) else { return .skipped("tunnels nested too deep") }
            guard entry & 0x100 != 0 else { continue }
            guard offset < b.count else { return .skipped("short MPLS packet") }
            if b[offset] >> 4 == 0 { return self.ethernet(b, at: offset + 4, path: &path) }
            return self.ipByVersion(b, at: offset, path: &path)
        }
        return .skipped("short MPLS packet")
    }

    static func ip(_ b: UnsafeBufferPointer<UInt8>, at offset: Int, version: Int, path: inout Path) -> Decoded {
        var o = offset
        let source: IPAddress
        let destination: IPAddress
        var end: Int
        var next: UInt8
        if version == 4 {
            guard o + 20 <= b.count else { return .skipped("short IPv4 header") }
            let headerLength = Int(b[o] & 0x0F) * 4
            let total = Int(b[o + 2]) << 8 | Int(b[o + 3])
            let fragment = (Int(b[o + 6]) << 8 | Int(b[o + 7])) & 0x3FFF
            guard headerLength >= 20 else { return .skipped("damaged IPv4 header") }
            guard fragment == 0 else { return .skipped("IPv4 fragment") }
            next = b[o + 9]
            source = IPAddress(b, at: o + 12, length: 4)
            destination = IPAddress(b, at: o + 16, length: 4)
            // Ethernet padding follows short packets; TSO captures may say 0.
            end = total >= headerLength ? min(b.count, o + total) : b.count
            o += headerLength
        } else {
            guard o + 40 <= b.count else { return .skipped("short IPv6 header") }
            let payloadLength = Int(b[o + 4]) << 8 | Int(b[o + 5])
            next = b[o + 6]
            source = IPAddress(b, at: o + 8, length: 16)
            destination = IPAddress(b, at: o + 24, length: 16)
            end = payloadLength > 0 ? min(b.count, o + 40 + payloadLength) : b.count
            o += 40
            // Hop-by-hop, routing and destination options; a fragment header ends the reading.
            while next == 0 || next == 43 || next == 60 {
                guard o + 2 <= end else { return .skipped("damaged IPv6 extension header") }
                next = b[o]
                o += (Int(b[o + 1]) + 1) * 8
            }
            if next == 44 { return .skipped("IPv6 fragment") }
        }
        switch next {
        case 6:
            break
        case 4:
            guard path.enter(Tunnel(kind: .ipInIP, id: nil)) else { return .skipped("tunnels nested too deep") }
            return self.ip(b, at: o, version: 4, path: &path)
        case 41:
            guard path.enter(Tunnel(kind: version == 4 ? .sixInFour : .ipInIP, id: nil)) else {
                return .skipped("tunnels nested too deep")
            }
            return self.ip(b, at: o, version: 6, path: &path)
        case 47:
            return self.gre(b, at: o, end: end, path: &path)
        case 17:
            return self.udp(b, at: o, end: end, path: &path)
        case 1: return .skipped("ICMP")
        case 58: return .skipped("ICMPv6")
        case 50: return .skipped("ESP (IPsec, encrypted)")
        case 132: return .skipped("SCTP")
        default: return .skipped("IP protocol \(next)")
        }
        guard o + 20 <= end else { return .skipped("short TCP header") }
        let sourcePort = Int(b[o]) << 8 | Int(b[o + 1])
        let destinationPort = Int(b[o + 2]) << 8 | Int(b[o + 3])
        let sequence = UInt32(b[o + 4]) << 24 | UInt32(b[o + 5]) << 16 | UInt32(b[o + 6]) << 8 | UInt32(b[o + 7])
        let dataOffset = Int(b[o + 12] >> 4) * 4
        guard dataOffset >= 20, o + dataOffset <= end else { return .skipped("damaged TCP header") }
        return .tcp(
            TCPSegment(
                source: TCPEndpoint(address: source, port: sourcePort),
                destination: TCPEndpoint(address: destination, port: destinationPort),
                sequence: sequence,
                acknowledgment: UInt32(b[o + 8]) << 24 | UInt32(b[o + 9]) << 16 | UInt32(b[o + 10]) << 8
                    | UInt32(b[o + 11]),
                flags: b[o + 13],
                payload: path.payload(UnsafeBufferPointer(rebasing: b[(o + dataOffset)..<end])),
                tunnel: path.key,
                tunnelName: path.innermost
            )
        )
    }

    /// GRE (RFC 2784, RFC 2890 key and sequence); ERSPAN types II and III inside it.
    static func gre(_ b: UnsafeBufferPointer<UInt8>, at start: Int, end: Int, path: inout Path) -> Decoded {
        guard start + 4 <= end else { return .skipped("short GRE header") }
        let flags = b[start]
        let version = b[start + 1] & 0x07
        guard version == 0 else { return .skipped("GRE version \(version) (PPTP)") }
        let type = Int(b[start + 2]) << 8 | Int(b[start + 3])
        var offset = start + 4
        if flags & 0x80 != 0 { offset += 4 }  // checksum and reserved
        var key: UInt32?
        if flags & 0x20 != 0 {
            guard offset + 4 <= end else { return .skipped("short GRE header") }
            key =
                UInt32(b[offset]) << 24 | UInt32(b[offset + 1]) << 16 | UInt32(b[offset + 2]) << 8
                | UInt32(b[offset + 3])
            offset += 4
        }
        if flags & 0x10 != 0 { offset += 4 }  // sequence number
        switch type {
        case 0x88BE, 0x22EB:
            // ERSPAN II (8 octets) or III (12, and 8 more with the platform subheader): then the mirrored frame.
            let headerLength = type == 0x88BE ? 8 : 12
            guard offset + headerLength <= end else { return .skipped("short ERSPAN header") }
            let session = UInt32(b[offset + 2] & 0x03) << 8 | UInt32(b[offset + 3])
            guard path.enter(Tunnel(kind: .erspan, id: session)) else { return .skipped("tunnels nested too deep") }
            var frame = offset + headerLength
            if type == 0x22EB, b[offset + 11] & 0x01 != 0 { frame += 8 }
            return self.ethernet(b, at: frame, path: &path)
        default:
            guard path.enter(Tunnel(kind: .gre, id: key)) else { return .skipped("tunnels nested too deep") }
            if type == 0x6558 { return self.ethernet(b, at: offset, path: &path) }
            return self.etherType(type, b, at: offset, path: &path)
        }
    }

    static func udp(_ b: UnsafeBufferPointer<UInt8>, at start: Int, end: Int, path: inout Path) -> Decoded {
        guard start + 8 <= end else { return .skipped("short UDP header") }
        let sourcePort = Int(b[start]) << 8 | Int(b[start + 1])
        let destinationPort = Int(b[start + 2]) << 8 | Int(b[start + 3])
        let o = start + 8
        func either(_ port: Int) -> Bool { sourcePort == port || destinationPort == port }
        if either(4789) {
            // VXLAN (RFC 7348): flags, 24 reserved bits, the 24-bit VNI, 8 reserved; then an Ethernet frame.
            guard o + 8 <= end, b[o] & 0x08 != 0 else { return .skipped("UDP 4789 without a VXLAN header") }
            let vni = UInt32(b[o + 4]) << 16 | UInt32(b[o + 5]) << 8 | UInt32(b[o + 6])
            guard path.enter(Tunnel(kind: .vxlan, id: vni)) else { return .skipped("tunnels nested too deep") }
            return self.ethernet(b, at: o + 8, path: &path)
        }
        if either(2152) { return self.gtpu(b, at: o, end: end, path: &path) }
        if either(1701) { return self.l2tp(b, at: o, end: end, path: &path) }
        return .skipped("UDP")
    }

    /// GTP-U (3GPP TS 29.281): a G-PDU carries an IP packet, after the optional fields and extension headers.
    static func gtpu(_ b: UnsafeBufferPointer<UInt8>, at start: Int, end: Int, path: inout Path) -> Decoded {
        guard start + 8 <= end else { return .skipped("short GTP-U header") }
        let flags = b[start]
        guard flags >> 5 == 1 else { return .skipped("GTP version \(flags >> 5)") }
        guard b[start + 1] == 0xFF else { return .skipped("GTP-U signalling (not a G-PDU)") }
        let teid =
            UInt32(b[start + 4]) << 24 | UInt32(b[start + 5]) << 16 | UInt32(b[start + 6]) << 8
            | UInt32(b[start + 7])
        var offset = start + 8
        if flags & 0x07 != 0 {
            guard offset + 4 <= end else { return .skipped("short GTP-U header") }
            var next = b[offset + 3]
            offset += 4
            // Extension headers: a length in 4-octet units, the next type in the last octet.
            while flags & 0x04 != 0, next != 0 {
                guard offset < end, b[offset] > 0, offset + Int(b[offset]) * 4 <= end else {
                    return .skipped("damaged GTP-U extension header")
                }
                let length = Int(b[offset]) * 4
                next = b[offset + length - 1]
                offset += length
            }
        }
        guard path.enter(Tunnel(kind: .gtpu, id: teid)) else { return .skipped("tunnels nested too deep") }
        return self.ipByVersion(b, at: offset, path: &path)
    }

    /// L2TPv2 (RFC 2661) data messages, with PPP inside: IPv4 (0x0021) or IPv6 (0x0057).
    static func l2tp(_ b: UnsafeBufferPointer<UInt8>, at start: Int, end: Int, path: inout Path) -> Decoded {
        guard start + 6 <= end else { return .skipped("short L2TP header") }
        let flags = UInt16(b[start]) << 8 | UInt16(b[start + 1])
        guard flags & 0x000F == 2 else { return .skipped("L2TP version \(flags & 0x000F)") }
        guard flags & 0x8000 == 0 else { return .skipped("L2TP control message") }
        var offset = start + 2
        if flags & 0x4000 != 0 { offset += 2 }  // length
        guard offset + 4 <= end else { return .skipped("short L2TP header") }
        let session = UInt32(b[offset + 2]) << 8 | UInt32(b[offset + 3])
        offset += 4
        if flags & 0x0800 != 0 { offset += 4 }  // Ns, Nr
        if flags & 0x0200 != 0 {
            guard offset + 2 <= end else { return .skipped("short L2TP header") }
            offset += 2 + (Int(b[offset]) << 8 | Int(b[offset + 1]))
        }
        // PPP: address and control (FF 03) when not compressed away, then a 1- or 2-octet protocol.
        if offset + 2 <= end, b[offset] == 0xFF, b[offset + 1] == 0x03 { offset += 2 }
        guard offset + 1 <= end else { return .skipped("short PPP frame") }
        var protocolNumber = Int(b[offset])
        if protocolNumber & 1 == 0 {
            guard offset + 2 <= end else { return .skipped("short PPP frame") }
            protocolNumber = protocolNumber << 8 | Int(b[offset + 1])
            offset += 2
        } else {
            offset += 1
        }
        guard path.enter(Tunnel(kind: .l2tp, id: session)) else { return .skipped("tunnels nested too deep") }
        switch protocolNumber {
        case 0x21: return self.ip(b, at: offset, version: 4, path: &path)
        case 0x57: return self.ip(b, at: offset, version: 6, path: &path)
        default: return .skipped("PPP protocol 0x\(String(protocolNumber, radix: 16)) in L2TP")
        }
    }
}
