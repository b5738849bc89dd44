import struct NIOCore.ByteBuffer

/// The first line of a server reply (RFC 1939 §3), or a SASL continuation (RFC 5034 §4).
public struct Reply: Hashable, Sendable {
    public enum Status: String, Hashable, Sendable {
        case ok = "+OK"
        case err = "-ERR"
        /// `+ [base64]`: a SASL challenge.
        case continuation = "+"
    }

    public var status: Status
    /// The response code in brackets, if the text begins with one (RFC 2449 §8).
    public var code: ResponseCode?
    /// The text after the status indicator and the code, without the separating space.
    public var text: String

    public init(_ status: Status, code: ResponseCode? = nil, _ text: String = "") {
        self.status = status
        self.code = code
        self.text = text
    }

    public static func ok(_ text: String = "", code: ResponseCode? = nil) -> Reply { Reply(.ok, code: code, text) }
    public static func err(_ text: String = "", code: ResponseCode? = nil) -> Reply { Reply(.err, code: code, text) }
}

/// An RFC 2449 §8 response code: `"[" resp-level *("/" resp-level) "]"`.
public struct ResponseCode: Hashable, Sendable, CustomStringConvertible {
    /// The levels, such as `["SYS", "TEMP"]`.
    public var levels: [String]

    public init(_ levels: [String]) { self.levels = levels }
    public init(_ text: String) { self.levels = text.split(separator: "/").map(String.init) }

    public var description: String { self.levels.joined(separator: "/") }

    /// RFC 2449 §8.1: the maildrop is locked by another session.
    public static let inUse = ResponseCode("IN-USE")
    /// RFC 2449 §8.2: the login came too soon after the last one.
    public static let loginDelay = ResponseCode("LOGIN-DELAY")
    /// RFC 3206 §4: a transient problem on the server.
    public static let sysTemp = ResponseCode("SYS/TEMP")
    /// RFC 3206 §4: a permanent problem on the server.
    public static let sysPerm = ResponseCode("SYS/PERM")
    /// RFC 3206 §5: the credentials are wrong.
    public static let auth = ResponseCode("AUTH")
    /// RFC 6856 §2.
    public static let utf8 = ResponseCode("UTF8")
}

/// A status line read from the server: the reply if it is one, and what is wrong with it.
public struct ParsedReply: Hashable, Sendable {
    public var reply: Reply?
    public var issues: [Anomaly]
}

public enum ReplyParser {
    /// Parses a status line without its line ending. `continuationAllowed` is true while a SASL exchange runs.
    public static func parse(_ line: some Collection<UInt8>, continuationAllowed: Bool = false) -> ParsedReply {
        // Read in place where the octets are contiguous (a ByteBuffer's are): every status line comes here.
        if let parsed = line.withContiguousStorageIfAvailable({
            Self.parse(octets: $0, continuationAllowed: continuationAllowed)
        }) {
            return parsed
        }
        return Array(line).withUnsafeBufferPointer { Self.parse(octets: $0, continuationAllowed: continuationAllowed) }
    }

    static func parse(octets bytes: UnsafeBufferPointer<UInt8>, continuationAllowed: Bool) -> ParsedReply {
        var issues: [Anomaly] = []

        func rest(after count: Int) -> Slice<UnsafeBufferPointer<UInt8>>? {
            if bytes.count == count { return bytes[count...] }
            if bytes[count] == 0x20 { return bytes[(count + 1)...] }
            return nil
        }
        func build(_ status: Reply.Status, _ rest: Slice<UnsafeBufferPointer<UInt8>>) -> ParsedReply {
            let (code, text, codeIssue) = splitCode(rest)
            if let codeIssue { issues.append(codeIssue) }
            return ParsedReply(reply: Reply(status, code: code, text), issues: issues)
        }

        // Compared octet by octet: the usual reply is read without building anything but its text.
        if starts(bytes, ok), let r = rest(after: 3) { return build(.ok, r) }
        if starts(bytes, err), let r = rest(after: 4) { return build(.err, r) }
        if continuationAllowed, bytes.first == 0x2B {
            if bytes.count == 1 {
                issues.append(
                    Anomaly(.saslChallenge, .server, "a SASL challenge is \"+\" and a space, even when empty")
                )
                return ParsedReply(reply: Reply(.continuation), issues: issues)
            }
            if bytes[1] == 0x20 {
                return ParsedReply(
                    reply: Reply(.continuation, String(decoding: bytes[2...], as: UTF8.self)),
                    issues: issues
                )
            }
        }
        // A status in the wrong case still frames the reply; say so and read it (R4).
        if starts(bytes, ok, foldingCase: true), let r = rest(after: 3) {
            issues.append(Anomaly(.statusIndicator, .server, "the status indicator is \"+OK\" in upper case"))
            return build(.ok, r)
        }
        if starts(bytes, err, foldingCase: true), let r = rest(after: 4) {
            issues.append(Anomaly(.statusIndicator, .server, "the status indicator is \"-ERR\" in upper case"))
            return build(.err, r)
        }
        return ParsedReply(reply: nil, issues: issues)
    }

    static let ok: [UInt8] = Array("+OK".utf8)
    static let err: [UInt8] = Array("-ERR".utf8)

    /// Whether `bytes` begin with `prefix` (upper case), lower-case letters in `bytes` read as upper case if asked.
    static func starts(_ bytes: UnsafeBufferPointer<UInt8>, _ prefix: [UInt8], foldingCase: Bool = false) -> Bool {
        guard bytes.count >= prefix.count else { return false }
        for i in prefix.indices {
            let byte = bytes[i]
            let folded = foldingCase && byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte
            guard folded == prefix[i] else { return false }
        }
        return true
    }

    /// Splits a leading response code from the text (RFC 2449 §3, §8; R9).
    static func splitCode(_ rest: Slice<UnsafeBufferPointer<UInt8>>) -> (ResponseCode?, String, Anomaly?) {
        guard rest.first == 0x5B else { return (nil, String(decoding: rest, as: UTF8.self), nil) }
        guard let close = rest.firstIndex(of: 0x5D) else {
            return (
                nil, String(decoding: rest, as: UTF8.self),
                Anomaly(.responseCode, .server, "a response code starts with \"[\" but has no \"]\"")
            )
        }
        let inside = rest[(rest.startIndex + 1)..<close]
        let levels = inside.split(separator: 0x2F, omittingEmptySubsequences: false)
        let valid = !levels.isEmpty && levels.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0 > 0x20 && $0 < 0x7F } }
        var after = rest[(close + 1)...]
        if after.first == 0x20 { after = after.dropFirst() }
        let text = String(decoding: after, as: UTF8.self)
        guard valid else {
            return (
                nil, String(decoding: rest, as: UTF8.self),
                Anomaly(.responseCode, .server, "a response code is printable levels separated by \"/\"")
            )
        }
        return (ResponseCode(levels.map { String(decoding: $0, as: UTF8.self) }), text, nil)
    }
}

// MARK: - Encoding

extension ByteBuffer {
    /// Writes the status line of `reply` with its CRLF.
    @discardableResult
    public mutating func writeReply(_ reply: Reply) -> Int {
        var written = self.writeString(reply.status.rawValue)
        if reply.status == .continuation {
            return written + self.writeString(" ") + self.writeString(reply.text) + self.writeString("\r\n")
        }
        if let code = reply.code {
            written += self.writeString(" [\(code)]")
        }
        if !reply.text.isEmpty {
            written += self.writeString(" ") + self.writeString(reply.text)
        }
        return written + self.writeString("\r\n")
    }
}

/// A capability line of a CAPA reply (RFC 2449 §5): a name and its parameters.
public struct Capability: Hashable, Sendable {
    /// The name in upper case.
    public var name: String
    public var parameters: [String]

    public init(name: String, parameters: [String] = []) {
        self.name = name.uppercased()
        self.parameters = parameters
    }

    public init?(line: String) {
        let fields = line.split(separator: " ").map(String.init)
        guard let first = fields.first else { return nil }
        self.init(name: first, parameters: Array(fields.dropFirst()))
    }

    public var line: String { ([self.name] + self.parameters).joined(separator: " ") }

    /// Capabilities registered with IANA (RFC 2449 §6, RFC 2595, RFC 3206, RFC 6856).
    public static let registered: Set<String> = [
        "TOP", "USER", "SASL", "RESP-CODES", "LOGIN-DELAY", "PIPELINING", "EXPIRE", "UIDL", "IMPLEMENTATION",
        "STLS", "AUTH-RESP-CODE", "UTF8", "LANG",
    ]
}
