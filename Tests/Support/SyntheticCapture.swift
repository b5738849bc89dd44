/// Pcap files built in the tests: one TCP connection on port 110 holding a scripted POP3 exchange, on any
/// link layer and IP version, optionally with two segments out of order.
public struct SyntheticCapture {
    public var dlt: UInt32
    /// The link-layer header in front of each IP packet, for IPv4 (false) or IPv6 (true).
    public var linkHeader: (Bool) -> [UInt8]
    public var ipv6 = false
    /// An IPv6 hop-by-hop header before TCP.
    public var extensionHeader = false
    public var exchange: [(fromClient: Bool, text: String)]
    /// Two segments of `exchange` written in each other's place.
    public var swap: (Int, Int)?
    /// FIN both ways at the end; false: the capture stops with the connection open.
    public var closes = true
    /// Segments carry the ACK flag (their acknowledgment numbers follow the exchange's order, not the file's).
    public var acks = true
    /// The client's and the server's first sequence numbers.
    public var initialSequence: (client: UInt32, server: UInt32) = (1000, 5000)
    /// Makes the frame from each IP packet (a tunnel around it, say); `linkHeader` is not used then.
    public var wrap: (([UInt8]) -> [UInt8])?

    public static let session: [(fromClient: Bool, text: String)] = [
        (false, "+OK ready\r\n"), (true, "USER alice\r\n"), (false, "+OK\r\n"), (true, "PASS wonderland\r\n"),
        (false, "+OK logged in\r\n"), (true, "STAT\r\n"), (false, "+OK 1 20\r\n"), (true, "LIST\r\n"),
        (false, "+OK\r\n1 20\r\n.\r\n"), (true, "QUIT\r\n"), (false, "+OK bye\r\n"),
    ]

    public init(dlt: UInt32 = 101, linkHeader: @escaping (Bool) -> [UInt8] = { _ in [] }) {
        self.dlt = dlt
        self.linkHeader = linkHeader
        self.exchange = Self.session
    }

    /// The file: classic pcap, little-endian, microseconds.
    public var bytes: [UInt8] { Self.file(self.frames, dlt: self.dlt) }

    /// A pcap file of `frames`, a millisecond apart.
    public static func file(_ frames: [[UInt8]], dlt: UInt32) -> [UInt8] {
        var file: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { file += $0 } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { file += $0 } }
        u32(0xA1B2_C3D4)
        u16(2)
        u16(4)
        u32(0)
        u32(0)
        u32(65535)
        u32(dlt)
        for (index, frame) in frames.enumerated() {
            u32(1_700_000_000)
            u32(UInt32(index) * 1000)
            u32(UInt32(frame.count))
            u32(UInt32(frame.count))
            file += frame
        }
        return file
    }

    /// The frames of the connection, in the order written.
    public var frames: [[UInt8]] {
        var frames: [[UInt8]] = []
        var seq: [Bool: UInt32] = [true: self.initialSequence.client, false: self.initialSequence.server]
        func packet(fromClient: Bool, flags: UInt8, payload: [UInt8]) {
            let ports: (UInt16, UInt16) = fromClient ? (40000, 110) : (110, 40000)
            let s = seq[fromClient]!
            let a = seq[!fromClient]!
            var tcp: [UInt8] = [UInt8(ports.0 >> 8), UInt8(ports.0 & 0xFF), UInt8(ports.1 >> 8), UInt8(ports.1 & 0xFF)]
            tcp += [UInt8(s >> 24), UInt8(s >> 16 & 0xFF), UInt8(s >> 8 & 0xFF), UInt8(s & 0xFF)]
            tcp += [UInt8(a >> 24), UInt8(a >> 16 & 0xFF), UInt8(a >> 8 & 0xFF), UInt8(a & 0xFF)]
            tcp += [0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0] + payload
            seq[fromClient]! &+= UInt32(payload.count) + (flags & 0x03 != 0 ? 1 : 0)
            let prefix: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11)
            let client: [UInt8] = self.ipv6 ? prefix + [1] : [10, 0, 0, 1]
            let server: [UInt8] = self.ipv6 ? prefix + [2] : [10, 0, 0, 2]
            let (src, dst) = fromClient ? (client, server) : (server, client)
            var ip: [UInt8]
            if self.ipv6 {
                let options: [UInt8] = self.extensionHeader ? [6, 0, 1, 4, 0, 0, 0, 0] : []
                let length = options.count + tcp.count
                ip = [0x60, 0, 0, 0, UInt8(length >> 8), UInt8(length & 0xFF), self.extensionHeader ? 0 : 6, 64]
                ip += src + dst + options
            } else {
                let length = 20 + tcp.count
                ip = [0x45, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0, 0x40, 0, 64, 6, 0, 0] + src + dst
            }
            frames.append(self.wrap.map { $0(ip + tcp) } ?? (self.linkHeader(self.ipv6) + ip + tcp))
        }
        packet(fromClient: true, flags: 0x02, payload: [])
        packet(fromClient: false, flags: 0x12, payload: [])
        for (fromClient, text) in self.exchange {
            packet(fromClient: fromClient, flags: self.acks ? 0x18 : 0x08, payload: Array(text.utf8))
        }
        if self.closes {
            packet(fromClient: false, flags: 0x11, payload: [])
            packet(fromClient: true, flags: 0x11, payload: [])
        }
        if let (i, j) = self.swap { frames.swapAt(2 + i, 2 + j) }
        return frames
    }
}
