import struct NIOCore.ByteBuffer

/// A POP3 command, as a client sends it.
///
/// - SeeAlso: [RFC 1939](https://datatracker.ietf.org/doc/html/rfc1939),
///   [RFC 2449](https://datatracker.ietf.org/doc/html/rfc2449) (CAPA),
///   [RFC 2595](https://datatracker.ietf.org/doc/html/rfc2595) (STLS),
///   [RFC 5034](https://datatracker.ietf.org/doc/html/rfc5034) (AUTH),
///   [RFC 6856](https://datatracker.ietf.org/doc/html/rfc6856) (UTF8, LANG)
public enum Command: Hashable, Sendable {
    /// `USER name`: names the mailbox (RFC 1939 §7).
    case user(String)
    /// `PASS secret`: the password for the name given by USER; takes the rest of the line (RFC 1939 §7).
    case pass(Credential)
    /// `APOP name digest`: login with an MD5 digest of the greeting's timestamp and a secret (RFC 1939 §7).
    case apop(name: String, digest: Credential)
    /// `AUTH [mechanism [initial-response]]`: SASL login (RFC 5034 §4). No mechanism is a legacy probe (R42).
    case auth(mechanism: String?, initialResponse: Credential?)
    /// `STAT` (RFC 1939 §5).
    case stat
    /// `LIST [msg]` (RFC 1939 §5).
    case list(Int?)
    /// `RETR msg` (RFC 1939 §5).
    case retr(Int)
    /// `DELE msg` (RFC 1939 §5).
    case dele(Int)
    /// `NOOP` (RFC 1939 §5).
    case noop
    /// `RSET` (RFC 1939 §5).
    case rset
    /// `QUIT` (RFC 1939 §4, §6).
    case quit
    /// `TOP msg n` (RFC 1939 §7).
    case top(message: Int, lines: Int)
    /// `UIDL [msg]` (RFC 1939 §7).
    case uidl(Int?)
    /// `CAPA` (RFC 2449 §5).
    case capa
    /// `STLS` (RFC 2595 §4).
    case stls
    /// `UTF8` (RFC 6856 §2).
    case utf8
    /// `LANG [tag]` (RFC 6856 §3).
    case lang(String?)
    /// Any other keyword, kept verbatim: obsolete ones (LAST, RPOP, XTND, XSENDER) and unknown ones.
    case other(keyword: String, arguments: [String])

    /// The keyword in upper case, or the keyword as sent for an unknown command.
    public var keyword: String {
        switch self {
        case .user: "USER"
        case .pass: "PASS"
        case .apop: "APOP"
        case .auth: "AUTH"
        case .stat: "STAT"
        case .list: "LIST"
        case .retr: "RETR"
        case .dele: "DELE"
        case .noop: "NOOP"
        case .rset: "RSET"
        case .quit: "QUIT"
        case .top: "TOP"
        case .uidl: "UIDL"
        case .capa: "CAPA"
        case .stls: "STLS"
        case .utf8: "UTF8"
        case .lang: "LANG"
        case .other(let keyword, _): keyword
        }
    }

    /// Keywords that were once POP3 but are not in RFC 1939 (R19).
    public static let obsoleteKeywords: Set<String> = ["LAST", "RPOP", "XTND", "XSENDER"]

    /// Whether this is a command that RFC 1939 or a registered extension defines.
    public var isKnown: Bool {
        if case .other = self { return false }
        return true
    }

    /// Whether the reply to this command, when `+OK`, is multi-line (RFC 1939 §3, RFC 2449 §5, RFC 6856 §3, R42).
    public var expectsMultiLineReply: Bool {
        switch self {
        case .list(nil), .uidl(nil), .retr, .top, .capa, .lang(nil): true
        case .auth(mechanism: nil, _): true
        default: false
        }
    }

    /// The message number the command refers to, if any.
    public var messageNumber: Int? {
        switch self {
        case .list(let n?), .uidl(let n?): n
        case .retr(let n), .dele(let n): n
        case .top(let n, _): n
        default: nil
        }
    }

    /// The command as a line without CRLF, credentials masked: what transcripts show.
    public var maskedText: String {
        var buffer = ByteBuffer()
        buffer.writeCommand(self, masked: true)
        return String(buffer: buffer)
    }
}

// MARK: - Encoding

extension ByteBuffer {
    /// Writes `command` followed by CRLF. With `masked`, credentials are written as the mask.
    @discardableResult
    public mutating func writeCommand(_ command: Command, masked: Bool = false, lineEnding: Bool = false) -> Int {
        var written = self.writeString(command.keyword)
        func argument(_ text: String) {
            written += self.writeString(" ") + self.writeString(text)
        }
        func secret(_ credential: Credential) {
            written += self.writeString(" ")
            written += masked ? self.writeString(Credential.mask) : self.writeBytes(credential.revealed)
        }
        switch command {
        case .user(let name):
            argument(name)
        case .pass(let password):
            secret(password)
        case .apop(let name, let digest):
            argument(name)
            secret(digest)
        case .auth(let mechanism, let initial):
            if let mechanism { argument(mechanism) }
            if let initial {
                if initial.octets == 0 { argument("=") } else { secret(initial) }
            }
        case .list(let n), .uidl(let n):
            if let n { argument(String(n)) }
        case .retr(let n), .dele(let n):
            argument(String(n))
        case .top(let n, let lines):
            argument(String(n))
            argument(String(lines))
        case .lang(let tag):
            if let tag { argument(tag) }
        case .other(_, let arguments):
            for a in arguments { argument(a) }
        case .stat, .noop, .rset, .quit, .capa, .stls, .utf8:
            break
        }
        if lineEnding { written += self.writeString("\r\n") }
        return written
    }
}
