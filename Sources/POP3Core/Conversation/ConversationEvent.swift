import struct NIOCore.ByteBuffer

/// Where a session is, as the conversation shows it (RFC 1939 §3).
public enum ConversationState: String, Sendable, Hashable, Codable {
    /// Connected; the server's greeting has not arrived.
    case greeting
    /// RFC 1939 §4: the client must identify itself.
    case authorization
    /// AUTHORIZATION after a successful USER: PASS comes next (RFC 1939 §7).
    case userAccepted = "authorization-user-accepted"
    /// AUTHORIZATION during an AUTH exchange (RFC 5034 §4).
    case saslExchange = "authorization-sasl"
    /// STLS was accepted; a TLS handshake follows (RFC 2595 §4).
    case tlsNegotiation = "tls-negotiation"
    /// RFC 1939 §5: the maildrop is open.
    case transaction
    /// RFC 1939 §6: QUIT in TRANSACTION; deletions are committed.
    case update
    /// Everything from here on is encrypted, so it is counted, not read.
    case encrypted
    /// The traffic is not POP3 (R49); it is counted, not read.
    case notPOP3 = "not-pop3"
    case closed

    /// The name transcripts show.
    public var displayName: String {
        switch self {
        case .greeting: "greeting"
        case .authorization: "AUTHORIZATION"
        case .userAccepted: "AUTHORIZATION (user accepted)"
        case .saslExchange: "AUTHORIZATION (SASL exchange)"
        case .tlsNegotiation: "TLS negotiation"
        case .transaction: "TRANSACTION"
        case .update: "UPDATE"
        case .encrypted: "encrypted"
        case .notPOP3: "not POP3"
        case .closed: "closed"
        }
    }

    var isAuthorization: Bool { self == .authorization || self == .userAccepted || self == .saslExchange }
}

/// A client command as it crossed the wire.
public struct CommandEvent: Sendable, Hashable {
    /// The keyword in upper case, or as sent when unknown.
    public var verb: String
    /// The command, or nil when it is malformed or over-long.
    public var command: Command?
    /// The line as sent, credentials masked.
    public var text: String
    /// Where a credential stands in the line, in octets, for exports that mask keeping the length.
    public var secretRange: Range<Int>?
    /// What this command does, with its RFC section.
    public var note: String

    public init(verb: String, command: Command?, text: String, secretRange: Range<Int>? = nil, note: String) {
        self.verb = verb
        self.command = command
        self.text = text
        self.secretRange = secretRange
        self.note = note
    }
}

/// A client line inside an AUTH exchange (RFC 5034 §4): a SASL response or `*` to cancel.
public struct SASLResponseEvent: Sendable, Hashable {
    public var cancel: Bool
    /// `*` for a cancel, the mask otherwise.
    public var text: String
    public var octets: Int
    public var note: String
}

/// The first line of a server reply, or a line where one was expected.
public struct ReplyEvent: Sendable, Hashable {
    /// The reply, or nil when the line is not a status line.
    public var reply: Reply?
    /// The line as sent; a SASL challenge is masked.
    public var text: String
    /// The verb of the command this answers, nil for the greeting or unexpected data.
    public var inResponseTo: String?
    public var multiline: Bool
    public var note: String
    /// `server`, or `gateway` for a reply the gateway made itself.
    public var side: Side = .server
}

/// The end of a multi-line reply.
public struct BodySummary: Sendable, Hashable {
    public var inResponseTo: String
    /// Octets as sent, stuffing included, terminator excluded.
    public var octets: Int
    public var lines: Int
    public var stuffedLines: Int
    /// False when the connection ended before the terminating dot.
    public var complete: Bool
    public var note: String
}

/// What the conversation machine reports, in the order it happened.
public enum ConversationEvent: Sendable, Hashable {
    case command(CommandEvent)
    case saslResponse(SASLResponseEvent)
    case reply(ReplyEvent)
    /// A line of a listing body (CAPA, LIST, UIDL, LANG, an AUTH probe), un-stuffed.
    case bodyLine(String)
    /// Octets of a RETR or TOP body, as they arrived; a slice of the input, not a copy.
    case bodyChunk(ByteBuffer)
    case bodyEnd(BodySummary)
    case stateChanged(ConversationState, note: String)
    case annotation(Side, String)
    case anomaly(Anomaly)
    /// Octets that are encrypted (after STLS, on an implicit-TLS port) or not POP3.
    case opaque(Side, octets: Int)
    /// What a side's first TLS handshake message shows in clear: version, server name, cipher suite.
    case tls(Side, TLSHello)
    case closed(Side)
}

extension Array where Element == ConversationEvent {
    /// The events with adjacent body chunks and opaque counts merged: what is left once the input's chunking,
    /// which moves those boundaries, is taken out.
    public func mergingChunks() -> [ConversationEvent] {
        var merged: [ConversationEvent] = []
        for event in self {
            switch (merged.last, event) {
            case (.bodyChunk?, .bodyChunk(var b)):
                // Taken out of the array first, so the buffer is not shared and grows in place: a body in
                // many small chunks must not be copied whole for each one.
                guard case .bodyChunk(var a) = merged.removeLast() else { continue }
                a.writeBuffer(&b)
                merged.append(.bodyChunk(a))
            case (.opaque(let s1, let n1)?, .opaque(let s2, let n2)) where s1 == s2:
                merged[merged.count - 1] = .opaque(s1, octets: n1 + n2)
            default:
                merged.append(event)
            }
        }
        return merged
    }
}
