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
}

/// A deviation from the checklist that a session shows.
public struct Anomaly: Sendable, Hashable {
    public var rule: Rule
    /// The peer at fault.
    public var side: Side
    /// One line of explanation. Never holds a credential.
    public var reason: String

    public init(_ rule: Rule, _ side: Side, _ reason: String) {
        self.rule = rule
        self.side = side
        self.reason = reason
    }
}
