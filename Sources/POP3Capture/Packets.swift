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
    public var flags: UInt8
    public var payload: ByteBuffer

    public var syn: Bool { self.flags & 0x02 != 0 }
    public var fin: Bool { self.flags & 0x01 != 0 }
    public var rst: Bool { self.flags & 0x04 != 0 }
    public var ack: Bool { self.flags & 0x10 != 0 }
}

/// Decodes link layers, IPv4/IPv6 and TCP. Anything else (ARP, UDP, fragments, damaged headers) is skipped.
public enum PacketDecoder {
    public struct UnsupportedLinkType: Error, CustomStringConvertible {
        public var linkType: Int32
        public var description: String {
            "link type \(self.linkType) is not supported (Ethernet, Linux SLL/SLL2, BSD loopback and raw IP are)"
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
        bytes.withUnsafeBufferPointer { self.tcp($0, linkType: linkType) }
    }

    /// The TCP segment in `bytes` (libpcap's buffer, say); the payload is the one copy made.
    public static func tcp(_ bytes: UnsafeBufferPointer<UInt8>, linkType: Int32) -> TCPSegment? {
        guard let (offset, version) = self.network(bytes, linkType: linkType) else { return nil }
        return self.ip(bytes, at: offset, version: version)
    }

    /// Where the network layer starts and which IP version it is, per link type.
    static func network(_ b: UnsafeBufferPointer<UInt8>, linkType: Int32) -> (Int, Int)? {
        func version(at offset: Int) -> (Int, Int)? {
            guard offset < b.count else { return nil }
            let v = Int(b[offset] >> 4)
            return v == 4 || v == 6 ? (offset, v) : nil
        }
        func etherType(_ type: Int, at offset: Int) -> (Int, Int)? {
            switch type {
            case 0x0800: return (offset, 4)
            case 0x86DD: return (offset, 6)
            default: return nil
            }
        }
        switch linkType {
        case 1:  // Ethernet, with any number of 802.1Q / 802.1ad tags
            var offset = 12
            while offset + 2 <= b.count {
                let type = Int(b[offset]) << 8 | Int(b[offset + 1])
                if type == 0x8100 || type == 0x88A8 || type == 0x9100 {
                    offset += 4
                    continue
                }
                return etherType(type, at: offset + 2)
            }
            return nil
        case 0, 108:
            // BSD loopback: a 4-byte address family, in the capturing host's order (NULL) or network order (LOOP).
            guard b.count >= 4 else { return nil }
            let little = Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24
            let big = Int(b[3]) | Int(b[2]) << 8 | Int(b[1]) << 16 | Int(b[0]) << 24
            for family in [little, big] {
                if family == 2 { return (4, 4) }
                if [10, 24, 28, 30].contains(family) { return (4, 6) }
            }
            return nil
        case 113:  // Linux cooked (SLL): protocol at 14
            guard b.count >= 16 else { return nil }
            return etherType(Int(b[14]) << 8 | Int(b[15]), at: 16)
        case 276:  // Linux cooked v2 (SLL2): protocol at 0
            guard b.count >= 20 else { return nil }
            return etherType(Int(b[0]) << 8 | Int(b[1]), at: 20)
        case 12, 14, 101, 228, 229:  // raw IP
            return version(at: 0)
        default:
            return nil
        }
    }

    static func ip(_ b: UnsafeBufferPointer<UInt8>, at offset: Int, version: Int) -> TCPSegment? {
        var o = offset
        let source: IPAddress
        let destination: IPAddress
        var end: Int
        if version == 4 {
            guard o + 20 <= b.count else { return nil }
            let headerLength = Int(b[o] & 0x0F) * 4
            let total = Int(b[o + 2]) << 8 | Int(b[o + 3])
            let fragment = (Int(b[o + 6]) << 8 | Int(b[o + 7])) & 0x3FFF
            guard headerLength >= 20, b[o + 9] == 6, fragment == 0 else { return nil }
            source = IPAddress(b, at: o + 12, length: 4)
            destination = IPAddress(b, at: o + 16, length: 4)
            // Ethernet padding follows short packets; TSO captures may say 0.
            end = total >= headerLength ? min(b.count, o + total) : b.count
            o += headerLength
        } else {
            guard o + 40 <= b.count else { return nil }
            let payloadLength = Int(b[o + 4]) << 8 | Int(b[o + 5])
            var next = b[o + 6]
            source = IPAddress(b, at: o + 8, length: 16)
            destination = IPAddress(b, at: o + 24, length: 16)
            end = payloadLength > 0 ? min(b.count, o + 40 + payloadLength) : b.count
            o += 40
            // Hop-by-hop, routing and destination options; a fragment header ends the reading.
            while next == 0 || next == 43 || next == 60 {
                guard o + 2 <= end else { return nil }
                next = b[o]
                o += (Int(b[o + 1]) + 1) * 8
            }
            guard next == 6 else { return nil }
        }
        guard o + 20 <= end else { return nil }
        let sourcePort = Int(b[o]) << 8 | Int(b[o + 1])
        let destinationPort = Int(b[o + 2]) << 8 | Int(b[o + 3])
        let sequence = UInt32(b[o + 4]) << 24 | UInt32(b[o + 5]) << 16 | UInt32(b[o + 6]) << 8 | UInt32(b[o + 7])
        let dataOffset = Int(b[o + 12] >> 4) * 4
        guard dataOffset >= 20, o + dataOffset <= end else { return nil }
        return TCPSegment(
            source: TCPEndpoint(address: source, port: sourcePort),
            destination: TCPEndpoint(address: destination, port: destinationPort),
            sequence: sequence,
            flags: b[o + 13],
            payload: ByteBuffer(bytes: UnsafeBufferPointer(rebasing: b[(o + dataOffset)..<end]))
        )
    }
}
