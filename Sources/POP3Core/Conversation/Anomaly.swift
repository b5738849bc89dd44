/// Which peer a line came from, or which one is at fault.
public enum Side: String, Sendable, Hashable, Codable {
    case client
    case server
    /// The gateway itself: its own replies and decisions.
    case gateway
    /// The capture: what the inspector could and could not see (it began or ended mid-session).
    case capture
}

/// A rule of the conformance checklist; its raw value is the number in `R1`…`R54`.
public enum Rule: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case lineEnding = 1
    case commandSyntax = 2
    case commandLength = 3
    case statusIndicator = 4
    case replyLength = 5
    case multiLineTermination = 6
    case dotStuffing = 7
    case bodyAfterError = 8
    case responseCode = 9
    case eightBit = 10
    case greeting = 11
    case authorizationOnly = 12
    case transactionOnly = 13
    case errorRequired = 14
    case loginSequence = 15
    case failedAuthentication = 16
    case update = 17
    case autologout = 18
    case obsoleteCommand = 19
    case arguments = 20
    case statFormat = 21
    case listFormat = 22
    case deletedMessage = 23
    case topFormat = 24
    case uniqueID = 25
    case apop = 26
    case messageSize = 27
    case capa = 28
    case capability = 29
    case pipelining = 30
    case stls = 31
    case stlsUnderTLS = 32
    case capabilitiesAfterTLS = 33
    case stlsAdvertised = 34
    case cleartextLogin = 35
    case tlsPortMismatch = 36
    case authCommand = 37
    case saslChallenge = 38
    case saslEncoding = 39
    case saslInitialResponse = 40
    case saslSecurityLayer = 41
    case authProbe = 42
    case saslMechanism = 43
    case lockAndDelay = 44
    case systemCodes = 45
    case utf8Command = 46
    case utf8Content = 47
    case popURL = 48
    case unknownCommands = 49
    case pendingCommands = 50
    case authLines = 51
    case lengthCaps = 52
    case unexpectedServerData = 53
    case directionConfusion = 54

    /// The stable id used in transcripts and docs, such as `R17`.
    public var id: String { "R\(self.rawValue)" }
    public var description: String { self.id }

    /// The class of this rule's findings unless a finding says otherwise (R26's weak MD5 is `security`, its
    /// timestamp syntax a `violation`; a relay's upstream that closed unasked, under R53, is a `note`).
    public var defaultSeverity: Severity {
        switch self {
        case .lineEnding, .commandSyntax, .commandLength, .statusIndicator, .replyLength, .multiLineTermination,
            .dotStuffing, .bodyAfterError, .greeting, .authorizationOnly, .transactionOnly, .errorRequired,
            .loginSequence, .arguments, .statFormat, .listFormat, .deletedMessage, .topFormat, .uniqueID, .apop,
            .capa, .stlsUnderTLS, .authCommand, .saslChallenge, .saslEncoding, .saslInitialResponse,
            .saslSecurityLayer, .lockAndDelay, .systemCodes, .utf8Command, .utf8Content, .unexpectedServerData,
            .directionConfusion:
            .violation
        case .stls, .cleartextLogin:
            .security
        case .responseCode, .eightBit, .autologout, .obsoleteCommand, .pipelining, .capabilitiesAfterTLS,
            .tlsPortMismatch, .authProbe, .unknownCommands, .pendingCommands, .authLines, .lengthCaps:
            .interop
        case .failedAuthentication, .update, .messageSize, .capability, .stlsAdvertised, .saslMechanism, .popURL:
            .note
        }
    }
}

/// How much a finding matters, per finding: the protocol broken, legal but known to break peers, a risk to
/// secrets, or worth knowing. Ordered, for `--min-severity`: note < interop < violation < security.
public enum Severity: String, Sendable, Hashable, CaseIterable, Comparable, Codable {
    /// Worth knowing, not wrong.
    case note
    /// Legal, or tolerated, but known to break clients or servers.
    case interop
    /// The protocol is broken: framing, state, or reply.
    case violation
    /// A login without TLS, APOP's MD5, weak TLS, injection around STLS.
    case security

    public static func < (a: Severity, b: Severity) -> Bool {
        Self.allCases.firstIndex(of: a)! < Self.allCases.firstIndex(of: b)!
    }
}

/// A deviation from the checklist that a session shows.
public struct Anomaly: Sendable, Hashable {
    public var rule: Rule
    /// The peer at fault.
    public var side: Side
    /// One line of explanation. Never holds a credential.
    public var reason: String
    /// This finding's class; its rule's default unless the finding is of another kind.
    public var severity: Severity

    public init(_ rule: Rule, _ side: Side, _ reason: String, severity: Severity? = nil) {
        self.rule = rule
        self.side = side
        self.reason = reason
        self.severity = severity ?? rule.defaultSeverity
    }
}
