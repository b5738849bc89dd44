/// Plain sentences that explain each line of a session, with the RFC section that defines it.
///
/// They are written for someone learning the protocol: what the line asks for or says, and what
/// follows from it. None of them ever quotes a credential.
public enum Annotations {
    // MARK: - Commands

    public static func command(_ command: Command?, verb: String) -> String {
        guard let command else {
            return "\(verb) with arguments it does not take: the server must answer -ERR (RFC 1939 §3)."
        }
        switch command {
        case .user(let name):
            return "USER names the mailbox \"\(name)\"; the next command, PASS, gives its password (RFC 1939 §7)."
        case .pass:
            return
                "With PASS, the client gives the password for the user named by USER; it is masked here (RFC 1939 §7)."
        case .apop(let name, _):
            return
                "APOP logs in as \"\(name)\" with an MD5 digest of the greeting's timestamp and a shared secret, "
                + "so the secret never crosses the wire (RFC 1939 §7)."
        case .auth(nil, _):
            return "AUTH with no mechanism is a legacy probe for the mechanism list; no RFC defines it (RFC 5034 §4)."
        case .auth(let mechanism?, let initial):
            let start = initial == nil ? "the server answers with a challenge" : "an initial response comes with it"
            return "AUTH starts a SASL login with the \(mechanism) mechanism; \(start) (RFC 5034 §4)."
        case .stat:
            return "STAT asks how many messages the maildrop holds and their total size in octets (RFC 1939 §5)."
        case .list(nil):
            return "LIST asks for the size of every message, one line each (RFC 1939 §5)."
        case .list(let n?):
            return "LIST \(n) asks for the size of message \(n) (RFC 1939 §5)."
        case .retr(let n):
            return "RETR \(n) asks for the whole of message \(n), as a multi-line reply (RFC 1939 §5)."
        case .dele(let n):
            return
                "DELE \(n) marks message \(n) as deleted; nothing is removed until the session ends with QUIT "
                + "(RFC 1939 §5, §6)."
        case .noop:
            return "NOOP does nothing but get an +OK; clients use it to keep a session alive (RFC 1939 §5)."
        case .rset:
            return "RSET takes back every deletion mark of this session (RFC 1939 §5)."
        case .quit:
            return
                "QUIT ends the session; in TRANSACTION it moves to UPDATE, where marked messages are removed "
                + "(RFC 1939 §6)."
        case .top(let n, let lines):
            return
                "TOP \(n) \(lines) asks for the headers of message \(n) and its first \(lines) body lines (RFC 1939 §7)."
        case .uidl(nil):
            return "UIDL asks for the unique id of every message, which stays the same across sessions (RFC 1939 §7)."
        case .uidl(let n?):
            return "UIDL \(n) asks for the unique id of message \(n) (RFC 1939 §7)."
        case .capa:
            return "CAPA asks which extensions the server supports, one per line (RFC 2449 §5)."
        case .stls:
            return
                "STLS asks to switch to TLS; after the server's +OK everything on this connection is encrypted "
                + "(RFC 2595 §4)."
        case .utf8:
            return "UTF8 asks the server to use UTF-8 for names, passwords and message content (RFC 6856 §2)."
        case .lang(nil):
            return "LANG asks which languages the server's reply texts can use (RFC 6856 §3)."
        case .lang(let tag?):
            return "LANG \(tag) asks for reply texts in that language (RFC 6856 §3)."
        case .other(let keyword, _):
            if Command.obsoleteKeywords.contains(keyword) {
                return "\(keyword) is an obsolete command that RFC 1939 dropped; servers usually refuse it (RFC 1939)."
            }
            return "\(keyword) is not a POP3 command; the server must answer -ERR (RFC 1939 §3)."
        }
    }

    public static func saslResponse(cancel: Bool) -> String {
        cancel
            ? "\"*\" cancels the AUTH exchange; the server must answer -ERR (RFC 5034 §4)."
            : "A SASL response in base64; it is masked here because it carries credentials (RFC 5034 §4)."
    }

    // MARK: - Replies

    public static func greeting(_ reply: Reply, timestamp: String?) -> String {
        guard reply.status == .ok else {
            return "The server refuses service in its greeting; the client should close (RFC 1939 §4)."
        }
        var note = "The greeting: the server is ready and the session is in the AUTHORIZATION state (RFC 1939 §4)."
        if timestamp != nil {
            note += " The <…> part is a timestamp that makes APOP possible (RFC 1939 §7)."
        }
        return note
    }

    public static func reply(_ reply: Reply, to command: Command?, verb: String, maildrop: MaildropModel) -> String {
        if reply.status == .continuation {
            return "A SASL challenge: the client must answer with one base64 line or \"*\" (RFC 5034 §4)."
        }
        let ok = reply.status == .ok
        var note: String
        switch command {
        case .user?:
            note =
                ok
                ? "The server knows the name (or will not say); the password (PASS) comes next (RFC 1939 §7)."
                : "The name was refused; the client may try USER or APOP again (RFC 1939 §7)."
        case .pass?, .apop?, .auth(_?, _)?:
            note =
                ok
                ? "Logged in: the maildrop is locked for this session, which enters TRANSACTION (RFC 1939 §4)."
                : "The login failed; the session stays in AUTHORIZATION (RFC 1939 §4)."
        case .auth(nil, _)?:
            note =
                ok
                ? "The server lists its SASL mechanisms, one per line (a legacy form, RFC 5034 §4)."
                : "The server does not list mechanisms this way; CAPA's SASL line is the standard place (RFC 2449 §6.3)."
        case .stat?:
            if ok, let count = maildrop.count, let octets = maildrop.octets {
                note =
                    "The maildrop holds \(count) message\(count == 1 ? "" : "s") of \(octets) octets in all (RFC 1939 §5)."
            } else {
                note = ok ? "The maildrop's count and size (RFC 1939 §5)." : "STAT was refused (RFC 1939 §5)."
            }
        case .list(nil)?:
            note =
                ok
                ? "A scan listing follows: message number and size, one per line (RFC 1939 §5)." : "LIST was refused."
        case .list(let n?)?:
            note = ok ? "Message \(n) and its size in octets (RFC 1939 §5)." : "No message \(n) to list (RFC 1939 §5)."
        case .retr(let n)?:
            note =
                ok
                ? "Message \(n) follows, byte-stuffed, ending with a line holding one dot (RFC 1939 §3, §5)."
                : "No message \(n) to retrieve (RFC 1939 §5)."
        case .dele(let n)?:
            note =
                ok
                ? "Message \(n) is marked deleted. It is still on the server: only QUIT removes it (RFC 1939 §5, §6)."
                : "Message \(n) cannot be deleted (it may not exist or be marked already) (RFC 1939 §5)."
        case .noop?:
            note = ok ? "Nothing happens; the server is alive (RFC 1939 §5)." : "NOOP was refused."
        case .rset?:
            note =
                ok
                ? "Every deletion mark is gone; the maildrop is as it was at login (RFC 1939 §5)." : "RSET was refused."
        case .quit?:
            note =
                ok
                ? "The server says goodbye; any messages marked deleted in TRANSACTION are now removed (RFC 1939 §6)."
                : "QUIT failed: some deleted messages were not removed (RFC 1939 §6)."
        case .top(let n, let lines)?:
            note =
                ok
                ? "The headers of message \(n), a blank line and up to \(lines) body lines follow (RFC 1939 §7)."
                : "No message \(n) for TOP (RFC 1939 §7)."
        case .uidl(nil)?:
            note = ok ? "A listing of message numbers and unique ids follows (RFC 1939 §7)." : "UIDL was refused."
        case .uidl(let n?)?:
            note = ok ? "Message \(n) and its unique id (RFC 1939 §7)." : "No message \(n) for UIDL (RFC 1939 §7)."
        case .capa?:
            note =
                ok
                ? "The capability list follows, one per line (RFC 2449 §5)."
                : "This server does not implement CAPA (RFC 2449 §5)."
        case .stls?:
            note =
                ok
                ? "TLS begins right after this line's CRLF; from here on the session is encrypted (RFC 2595 §4)."
                : "STLS was refused; the session goes on in plaintext (RFC 2595 §4)."
        case .utf8?:
            note = ok ? "UTF-8 is on for the rest of the session (RFC 6856 §2)." : "UTF8 was refused (RFC 6856 §2)."
        case .lang(nil)?:
            note =
                ok
                ? "The languages the server offers follow, one per line (RFC 6856 §3)."
                : "LANG was refused (RFC 6856 §3)."
        case .lang?:
            note =
                ok
                ? "The server changed the language of its replies (RFC 6856 §3)."
                : "That language is not offered (RFC 6856 §3)."
        case .other?, nil:
            note = ok ? "The server accepted \(verb)." : "The server refused \(verb) (RFC 1939 §3)."
        }
        if let code = reply.code {
            note += " " + Self.responseCode(code)
        }
        return note
    }

    public static func responseCode(_ code: ResponseCode) -> String {
        switch code.levels.first?.uppercased() {
        case "IN-USE": "[IN-USE]: another session holds the maildrop's lock (RFC 2449 §8.1)."
        case "LOGIN-DELAY": "[LOGIN-DELAY]: the login came sooner than the server allows (RFC 2449 §8.2)."
        case "SYS":
            code.levels.dropFirst().first?.uppercased() == "PERM"
                ? "[SYS/PERM]: a permanent problem on the server, not the user's fault (RFC 3206 §4)."
                : "[SYS/TEMP]: a passing problem on the server; try again later (RFC 3206 §4)."
        case "AUTH": "[AUTH]: the credentials were wrong (RFC 3206 §5)."
        case "UTF8": "[UTF8]: this needs the UTF8 command first (RFC 6856 §2)."
        default: "[\(code)] is a response code this reader does not know; clients ignore such codes (RFC 2449 §8)."
        }
    }

    public static func body(_ summary: BodySummary, messageOctets: Int) -> String {
        var note =
            "\(summary.inResponseTo) delivered \(summary.lines) line\(summary.lines == 1 ? "" : "s") "
            + "(\(messageOctets) octets once un-stuffed)"
        if summary.stuffedLines > 0 {
            note +=
                "; \(summary.stuffedLines) line\(summary.stuffedLines == 1 ? "" : "s") began with a dot and "
                + "carried an extra one (byte-stuffing, RFC 1939 §3)."
            return note
        }
        return note + " (RFC 1939 §3)."
    }

    public static func capability(_ capability: Capability) -> String? {
        switch capability.name {
        case "TOP": "TOP: the server supports TOP (RFC 2449 §6.1)."
        case "USER": "USER: logins with USER and the password (PASS) are allowed (RFC 2449 §6.2)."
        case "SASL":
            "SASL: AUTH works with these mechanisms: \(capability.parameters.joined(separator: " ")) (RFC 2449 §6.3)."
        case "RESP-CODES": "RESP-CODES: bracketed response codes in replies mean something (RFC 2449 §6.4)."
        case "LOGIN-DELAY": "LOGIN-DELAY: logins must be this many seconds apart (RFC 2449 §6.5)."
        case "PIPELINING": "PIPELINING: the client may send several commands without waiting (RFC 2449 §6.6)."
        case "EXPIRE": "EXPIRE: how many days the server keeps messages after retrieval (RFC 2449 §6.7)."
        case "UIDL": "UIDL: the server supports unique ids (RFC 2449 §6.8)."
        case "IMPLEMENTATION": "IMPLEMENTATION: the server's software, for information only (RFC 2449 §6.9)."
        case "STLS": "STLS: the session can switch to TLS (RFC 2595 §4)."
        case "AUTH-RESP-CODE": "AUTH-RESP-CODE: credential failures carry [AUTH] (RFC 3206 §6)."
        case "UTF8": "UTF8: the UTF8 command is available (RFC 6856 §2)."
        case "LANG": "LANG: reply texts can change language (RFC 6856 §3)."
        default:
            capability.name.hasPrefix("X")
                ? "\(capability.name) is a private capability (names starting with X are not registered)."
                : "\(capability.name) is not a registered capability."
        }
    }

    public static let clientLeftEncrypted =
        "The client closed the connection; whether it sent QUIT inside TLS cannot be seen from here."

    public static func clientLeft(inTransaction: Bool, marked: Int, sentQuit: Bool) -> String {
        if sentQuit { return "The client closed the connection after QUIT." }
        guard inTransaction else {
            return "The client closed the connection without QUIT."
        }
        let marks =
            marked > 0
            ? " The \(marked) message\(marked == 1 ? "" : "s") marked deleted stay\(marked == 1 ? "s" : "") on the server."
            : ""
        return "The client closed the connection without QUIT, so the session never reaches UPDATE (RFC 1939 §6)."
            + marks
    }
}
