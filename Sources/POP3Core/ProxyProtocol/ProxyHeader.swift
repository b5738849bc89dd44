#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol header a load balancer puts before the client's first octet (HAProxy's
/// proxy-protocol.txt, versions 1 and 2): who the client really is. Pure; reads octets, never a socket.
public struct ProxyHeader: Sendable, Hashable {
    public enum Version: Int, Sendable, Hashable {
        case v1 = 1
        case v2 = 2
    }

    /// An address and port as the header carries them.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// In its usual text form (`192.0.2.7`, `2001:db8::7`).
        public var address: String
        public var port: Int

        public init(address: String, port: Int) {
            self.address = address
            self.port = port
        }

        public var description: String {
            self.address.contains(":") ? "[\(self.address)]:\(self.port)" : "\(self.address):\(self.port)"
        }
    }

    public var version: Version
    /// The client and the address it connected to; nil for v2 `LOCAL` and v1 `UNKNOWN` (the balancer's own
    /// connection, a health check), and for families other than TCP over IPv4 and IPv6.
    public var source: Endpoint?
    public var destination: Endpoint?
    /// v2's `PP2_TYPE_SSL`: the client spoke TLS to the balancer, with this version when it says.
    public var tls: TLS?
    /// v2's `PP2_TYPE_AUTHORITY`: the server name the client asked for.
    public var authority: String?
    /// The header's length: where the client's own octets begin.
    public var length: Int

    public struct TLS: Sendable, Hashable {
        public var version: String?
        public var cipher: String?
        /// The client presented a certificate, and it was verified.
        public var verifiedCertificate: Bool

        public init(version: String?, cipher: String?, verifiedCertificate: Bool) {
            self.version = version
            self.cipher = cipher
            self.verifiedCertificate = verifiedCertificate
        }
    }

    /// The longest header read: v1's limit is 107 octets; v2 headers with TLVs are rarely above a few hundred
    /// (HAProxy asks receivers for 232 at least). Longer is refused, not buffered.
    public static let maximumLength = 1024
    /// v2's first 12 octets.
    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    public enum Parse: Sendable, Hashable {
        /// What came so far is the start of a header.
        case needMoreData
        case header(ProxyHeader)
        /// Not a header, or a malformed one: why, for the log.
        case invalid(String)
    }

    /// Reads a header from the start of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> Parse {
        // A ByteBuffer's view is read in place: the header is parsed on every read until it is whole.
        if let parsed = bytes.withContiguousStorageIfAvailable({
            Self.parse(contiguous: UnsafeBufferPointer(rebasing: $0.prefix(Self.maximumLength + 1)))
        }) {
            return parsed
        }
        return Array(bytes.prefix(Self.maximumLength + 1)).withUnsafeBufferPointer { Self.parse(contiguous: $0) }
    }

    private static func parse(contiguous bytes: UnsafeBufferPointer<UInt8>) -> Parse {
        guard let first = bytes.first else { return .needMoreData }
        if first == UInt8(ascii: "P") { return Self.parseV1(bytes) }
        if first == 0x0D { return Self.parseV2(Array(bytes)) }
        return .invalid("no PROXY header: the connection began with \(Self.show(bytes.prefix(16)))")
    }

    // MARK: - Version 1: "PROXY TCP4 192.0.2.7 198.51.100.1 51234 110\r\n"

    private static let v1Prefix = Array("PROXY ".utf8)

    /// Read as octets, field by field: a header comes with every session behind a balancer.
    private static func parseV1(_ bytes: UnsafeBufferPointer<UInt8>) -> Parse {
        let prefix = Self.v1Prefix
        let known = min(bytes.count, prefix.count)
        guard bytes[..<known].elementsEqual(prefix[..<known]) else {
            return .invalid("no PROXY header: the connection began with \(Self.show(bytes.prefix(16)))")
        }
        guard let newline = bytes.prefix(107).firstIndex(of: 0x0A) else {
            return bytes.count >= 107 ? .invalid("a version 1 header longer than 107 octets") : .needMoreData
        }
        guard newline > 0, bytes[newline - 1] == 0x0D else { return .invalid("a version 1 header must end in CRLF") }
        let length = newline + 1
        // The fields between "PROXY " and CRLF, split at each space (empty fields kept, as the grammar has none).
        var fields: [Range<Int>] = []
        fields.reserveCapacity(6)
        var start = prefix.count
        let end = max(newline - 1, start)
        for index in start...end where index == end || bytes[index] == 0x20 {
            fields.append(start..<index)
            start = index + 1
            if fields.count > 5 { break }
        }
        let family = bytes[fields[0]]
        if family.elementsEqual("UNKNOWN".utf8) {
            return .header(ProxyHeader(version: .v1, source: nil, destination: nil, length: length))
        }
        let v6 = family.elementsEqual("TCP6".utf8)
        guard v6 || family.elementsEqual("TCP4".utf8) else {
            let name = String(decoding: family, as: UTF8.self)
            return .invalid(
                "a version 1 header with protocol \(Self.show(name.utf8.prefix(16))), not TCP4, TCP6 or UNKNOWN"
            )
        }
        guard fields.count == 5 else { return .invalid("a version 1 header needs 2 addresses and 2 ports") }
        guard let source = Self.address(bytes[fields[1]], v6: v6),
            let destination = Self.address(bytes[fields[2]], v6: v6)
        else { return .invalid("a version 1 header with an address that is not \(v6 ? "IPv6" : "IPv4")") }
        guard let sourcePort = Self.port(bytes[fields[3]]), let destinationPort = Self.port(bytes[fields[4]]) else {
            return .invalid("a version 1 header with a port that is not 0 to 65535")
        }
        return .header(
            ProxyHeader(
                version: .v1,
                source: Endpoint(address: source, port: sourcePort),
                destination: Endpoint(address: destination, port: destinationPort),
                length: length
            )
        )
    }

    /// The address in canonical form, when it is one of its family.
    private static func address(_ text: Slice<UnsafeBufferPointer<UInt8>>, v6: Bool) -> String? {
        // A NUL would end the C string early: "192.0.2.7\0junk" is not an address.
        guard !text.isEmpty, text.count <= 45, !text.contains(0) else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 46) { field in
            for (offset, octet) in text.enumerated() { field[offset] = CChar(bitPattern: octet) }
            field[text.count] = 0
            if v6 {
                var address = in6_addr()
                guard inet_pton(AF_INET6, field.baseAddress, &address) == 1 else { return nil }
                return withUnsafeBytes(of: &address) { IPText.format(v6: $0) }
            }
            var address = in_addr()
            guard inet_pton(AF_INET, field.baseAddress, &address) == 1 else { return nil }
            return IPText.format(v4: UInt32(bigEndian: address.s_addr))
        }
    }

    private static func port(_ text: Slice<UnsafeBufferPointer<UInt8>>) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.count == 1 || text.first != UInt8(ascii: "0") else { return nil }
        var value = 0
        for octet in text {
            guard octet >= 0x30, octet <= 0x39 else { return nil }
            value = value * 10 + Int(octet - 0x30)
        }
        return value <= 65535 ? value : nil
    }

    // MARK: - Version 2: the signature, version and command, family, length, addresses, TLVs

    private static func parseV2(_ bytes: [UInt8]) -> Parse {
        let known = min(bytes.count, Self.signature.count)
        guard bytes[..<known].elementsEqual(Self.signature[..<known]) else {
            return .invalid("no PROXY header: the connection began with \(Self.show(bytes.prefix(16)))")
        }
        guard bytes.count >= 16 else { return .needMoreData }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("a version 2 header of version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("a version 2 header with command \(command), not LOCAL or PROXY") }
        let family = bytes[13]
        let bodyLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + bodyLength
        guard length <= Self.maximumLength else {
            return .invalid("a version 2 header of \(length) octets, over the limit of \(Self.maximumLength)")
        }
        guard bytes.count >= length else { return .needMoreData }
        let body = Array(bytes[16..<length])
        var header = ProxyHeader(version: .v2, source: nil, destination: nil, length: length)
        var tlvStart = 0
        switch family {
        case 0x11, 0x12, 0x21, 0x22:
            // TCP or UDP over IPv4 (4 + 4 + 2 + 2) or IPv6 (16 + 16 + 2 + 2).
            let size = family >> 4 == 1 ? 4 : 16
            guard body.count >= 2 * size + 4 else {
                return .invalid("a version 2 \(size == 4 ? "IPv4" : "IPv6") header shorter than its addresses")
            }
            tlvStart = 2 * size + 4
            if command == 1, family & 0x0F == 1 {
                header.source = Endpoint(
                    address: IPText.format(Array(body[0..<size])),
                    port: Self.short(body, 2 * size)
                )
                header.destination = Endpoint(
                    address: IPText.format(Array(body[size..<(2 * size)])),
                    port: Self.short(body, 2 * size + 2)
                )
            }
        case 0x31, 0x32:
            guard body.count >= 216 else { return .invalid("a version 2 Unix header shorter than its addresses") }
            tlvStart = 216
        case 0x00:
            tlvStart = 0
        default:
            return .invalid("a version 2 header with family and protocol 0x\(String(family, radix: 16))")
        }
        if command == 1, family != 0x11, family != 0x21, family != 0x00 {
            // UDP or Unix: not a TCP client of ours; read as the balancer's own.
            header.source = nil
        }
        guard Self.readTLVs(body[tlvStart...], into: &header) else {
            return .invalid("a version 2 header whose TLVs overrun it")
        }
        return .header(header)
    }

    /// `PP2_TYPE_AUTHORITY` (0x02) and `PP2_TYPE_SSL` (0x20, with its version and cipher); the rest ignored.
    private static func readTLVs(_ bytes: ArraySlice<UInt8>, into header: inout ProxyHeader) -> Bool {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            guard bytes.endIndex - index >= 3 else { return false }
            let type = bytes[index]
            let length = Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            let start = index + 3
            guard bytes.endIndex - start >= length else { return false }
            let value = bytes[start..<(start + length)]
            switch type {
            case 0x02:
                header.authority = String(decoding: value, as: UTF8.self)
            case 0x20:
                // client (1), verify (4), then sub-TLVs: 0x21 version, 0x23 cipher.
                guard value.count >= 5 else { return false }
                let client = value[value.startIndex]
                let verify = value[(value.startIndex + 1)..<(value.startIndex + 5)].reduce(0) { $0 << 8 | UInt32($1) }
                var tls = TLS(version: nil, cipher: nil, verifiedCertificate: client & 0x02 != 0 && verify == 0)
                var sub = value.startIndex + 5
                while sub < value.endIndex {
                    guard value.endIndex - sub >= 3 else { return false }
                    let subType = value[sub]
                    let subLength = Int(value[sub + 1]) << 8 | Int(value[sub + 2])
                    guard value.endIndex - (sub + 3) >= subLength else { return false }
                    let text = String(decoding: value[(sub + 3)..<(sub + 3 + subLength)], as: UTF8.self)
                    if subType == 0x21 { tls.version = text }
                    if subType == 0x23 { tls.cipher = text }
                    sub += 3 + subLength
                }
                if client & 0x01 != 0 { header.tls = tls }
            default:
                break
            }
            index = start + length
        }
        return true
    }

    private static func short(_ bytes: [UInt8], _ at: Int) -> Int { Int(bytes[at]) << 8 | Int(bytes[at + 1]) }

    /// The first octets, as transcripts show text (control characters escaped).
    static func show(_ bytes: some Collection<UInt8>) -> String {
        "\"" + CommandParser.printable(String(decoding: bytes.prefix(16), as: UTF8.self), limit: 16) + "\""
    }
}

/// Addresses in their canonical text: dotted quads, and IPv6 as RFC 5952 says (by the C library, which also
/// reads them strictly: no leading zeros).
enum IPText {
    static func format(_ bytes: [UInt8]) -> String {
        if bytes.count == 4 { return Self.format(v4: bytes.reduce(0) { $0 << 8 | UInt32($1) }) }
        return bytes.withUnsafeBytes { Self.format(v6: $0) }
    }

    /// Dotted decimal, written in place (no C call, no intermediate strings).
    static func format(v4 value: UInt32) -> String {
        String(unsafeUninitializedCapacity: 15) { text in
            var count = 0
            for shift in [24, 16, 8, 0] as [UInt32] {
                if shift != 24 {
                    text[count] = UInt8(ascii: ".")
                    count += 1
                }
                let octet = UInt8(truncatingIfNeeded: value >> shift)
                if octet >= 100 {
                    text[count] = 0x30 + octet / 100
                    count += 1
                }
                if octet >= 10 {
                    text[count] = 0x30 + octet / 10 % 10
                    count += 1
                }
                text[count] = 0x30 + octet % 10
                count += 1
            }
            return count
        }
    }

    /// RFC 5952's form, as the C library prints it.
    static func format(v6 octets: UnsafeRawBufferPointer) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN)) { text in
            guard inet_ntop(AF_INET6, octets.baseAddress, text.baseAddress, socklen_t(text.count)) != nil else {
                return ""
            }
            return String(cString: text.baseAddress!)
        }
    }
}
