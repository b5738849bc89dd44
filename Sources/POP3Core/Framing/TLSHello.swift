/// What the first TLS handshake message of a side reveals in clear: the version, the server name (SNI) and,
/// from the server, the chosen cipher suite (RFC 8446 §4.1.2–4.1.3, RFC 5246 §7.4.1, RFC 6066 §3).
public struct TLSHello: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case clientHello = "ClientHello"
        case serverHello = "ServerHello"
    }

    public var kind: Kind
    /// The version offered (the highest, from supported_versions when present) or chosen.
    public var version: UInt16
    public var serverName: String?
    /// The server's chosen cipher suite.
    public var cipherSuite: UInt16?
    /// The application protocols a ClientHello offers (ALPN, RFC 7301); nil when it offers none.
    public var alpn: [String]?

    public init(
        kind: Kind,
        version: UInt16,
        serverName: String? = nil,
        cipherSuite: UInt16? = nil,
        alpn: [String]? = nil
    ) {
        self.kind = kind
        self.version = version
        self.serverName = serverName
        self.cipherSuite = cipherSuite
        self.alpn = alpn
    }

    public var versionName: String { Self.name(ofVersion: self.version) }

    /// An alert record in clear (RFC 8446 §6, RFC 5246 §7.2) at the start of `bytes`: its level and name. Only a
    /// record of exactly two octets counts: an encrypted alert is longer (TLS 1.2) or of another type (TLS 1.3).
    public static func alert(_ bytes: some Collection<UInt8>) -> (fatal: Bool, name: String)? {
        let head = Array(bytes.prefix(7))
        guard head.count == 7, head[0] == 0x15, head[1] == 0x03, head[2] <= 0x04, head[3] == 0, head[4] == 2,
            head[5] == 1 || head[5] == 2
        else { return nil }
        let names: [UInt8: String] = [
            0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
            42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
            46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied",
            50: "decode_error", 51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
            80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
            110: "unsupported_extension", 112: "unrecognized_name", 116: "certificate_required",
            120: "no_application_protocol",
        ]
        return (head[5] == 2, names[head[6]] ?? "alert \(head[6])")
    }

    public static func name(ofVersion version: UInt16) -> String {
        switch version {
        case 0x0300: "SSL 3.0"
        case 0x0301: "TLS 1.0"
        case 0x0302: "TLS 1.1"
        case 0x0303: "TLS 1.2"
        case 0x0304: "TLS 1.3"
        default: "version 0x" + String(version, radix: 16)
        }
    }

    /// A name for the cipher suites worth naming; others are shown in hex.
    public var cipherName: String? {
        guard let suite = self.cipherSuite else { return nil }
        let names: [UInt16: String] = [
            0x0004: "TLS_RSA_WITH_RC4_128_MD5", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
            0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
            0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA", 0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
            0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384", 0x1303: "TLS_CHACHA20_POLY1305_SHA256",
        ]
        return names[suite] ?? "0x" + String(suite, radix: 16)
    }

    /// RC4, export-grade and NULL suites (R35; RFC 7465 forbids RC4).
    public var weakCipher: Bool {
        guard let suite = self.cipherSuite else { return false }
        let weak: Set<UInt16> = [
            0x0000, 0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0x0008, 0x000B, 0x000E, 0x0011, 0x0014, 0x0017,
            0x0018, 0x0019, 0x0020, 0x0024, 0x0028, 0x002B, 0x008A, 0x008E, 0x0092, 0xC002, 0xC007, 0xC00C, 0xC011,
            0xC016,
        ]
        return weak.contains(suite)
    }

    public enum Result: Sendable, Hashable {
        case hello(TLSHello)
        /// More octets are needed to read the first handshake message.
        case incomplete
        /// Not a TLS handshake.
        case notTLS
    }

    /// The most a reader holds to decide: a record header and the longest record plaintext (RFC 8446 §5.1).
    public static let probeLimit = 5 + 16_384

    /// Reads the first handshake message from the start of a side's TLS stream, as far as the first record holds
    /// it. Decided on the first record alone, once it is all there: the verdict is the same however the stream
    /// was cut, and never needs more than ``probeLimit`` octets.
    public static func parse(_ bytes: some Collection<UInt8>) -> Result {
        let b = Array(bytes.prefix(Self.probeLimit))
        guard b.count >= 5 else {
            if b.isEmpty { return .incomplete }
            return b[0] == 0x16 && (b.count < 2 || b[1] == 0x03) ? .incomplete : .notTLS
        }
        guard b[0] == 0x16, b[1] == 0x03 else { return .notTLS }
        let recordLength = Int(b[3]) << 8 | Int(b[4])
        // A handshake record holds at least a message header; none is longer than the protocol allows.
        guard recordLength >= 4, recordLength <= 16_384 else { return .notTLS }
        guard b.count >= 5 + recordLength else { return .incomplete }
        var p = 5
        let type = b[p]
        let length = Int(b[p + 1]) << 16 | Int(b[p + 2]) << 8 | Int(b[p + 3])
        p += 4
        guard type == 1 || type == 2 else { return .notTLS }
        // The hello may go on in the next records; the first one holds what is read here.
        let end = min(5 + recordLength, p + length)
        func u16(_ at: Int) -> UInt16? { at + 2 <= end ? UInt16(b[at]) << 8 | UInt16(b[at + 1]) : nil }

        guard var version = u16(p) else { return .notTLS }
        p += 2 + 32
        guard p < end else { return .notTLS }
        p += 1 + Int(b[p])  // session id
        var cipher: UInt16?
        if type == 1 {
            guard let suites = u16(p) else { return .notTLS }
            p += 2 + Int(suites)
            guard p < end else { return .hello(TLSHello(kind: .clientHello, version: version)) }
            p += 1 + Int(b[p])  // compression methods
        } else {
            cipher = u16(p)
            p += 3
        }
        var name: String?
        var alpn: [String]?
        if let extensionsLength = u16(p) {
            p += 2
            let extensionsEnd = min(end, p + Int(extensionsLength))
            while p + 4 <= extensionsEnd {
                let extType = Int(b[p]) << 8 | Int(b[p + 1])
                let extLength = Int(b[p + 2]) << 8 | Int(b[p + 3])
                let body = p + 4
                guard body + extLength <= extensionsEnd else { break }
                if extType == 0, type == 1, extLength >= 5, b[body + 2] == 0 {
                    let nameLength = Int(b[body + 3]) << 8 | Int(b[body + 4])
                    if body + 5 + nameLength <= body + extLength {
                        name = String(decoding: b[(body + 5)..<(body + 5 + nameLength)], as: UTF8.self)
                    }
                }
                if extType == 16, type == 1, extLength >= 2 {
                    var protocols: [String] = []
                    var q = body + 2
                    while q < body + extLength {
                        let length = Int(b[q])
                        guard q + 1 + length <= body + extLength else { break }
                        protocols.append(String(decoding: b[(q + 1)..<(q + 1 + length)], as: UTF8.self))
                        q += 1 + length
                    }
                    alpn = protocols
                }
                if extType == 43 {
                    if type == 2, extLength == 2 {
                        version = UInt16(b[body]) << 8 | UInt16(b[body + 1])
                    } else if type == 1, extLength >= 1 {
                        var highest: UInt16 = 0
                        var q = body + 1
                        while q + 1 < body + extLength {
                            let offered = UInt16(b[q]) << 8 | UInt16(b[q + 1])
                            // GREASE values (RFC 8701) are 0x?A?A.
                            if offered & 0x0F0F != 0x0A0A { highest = max(highest, offered) }
                            q += 2
                        }
                        if highest > 0 { version = highest }
                    }
                }
                p = body + extLength
            }
        }
        return .hello(
            TLSHello(
                kind: type == 1 ? .clientHello : .serverHello,
                version: version,
                serverName: name,
                cipherSuite: cipher,
                alpn: alpn
            )
        )
    }
}
