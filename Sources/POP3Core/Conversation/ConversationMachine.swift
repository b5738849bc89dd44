import struct NIOCore.ByteBuffer
import struct NIOCore.CircularBuffer

/// The one reader of POP3 that the relay, the inspector, the demo and the tests share.
///
/// Feed it what the client sent and what the server sent, in the order they crossed the wire and in
/// any chunking; it returns what happened as ``ConversationEvent``s. It does no I/O and reads no clock:
/// times, where a rule needs them (R18), come in as parameters.
///
/// ```
///  greeting ──+OK──▶ AUTHORIZATION ──USER +OK──▶ user accepted ──PASS +OK──┐
///                      │  ▲  │                         │ -ERR               │
///                      │  └──┼─────────────────────────┘                    ▼
///                      │     └──APOP/AUTH +OK──────────────────────▶ TRANSACTION ──QUIT──▶ UPDATE ──▶ closed
///                      └──STLS +OK──▶ TLS negotiation ──▶ encrypted
/// ```
///
/// Whether a reply is multi-line depends on the command it answers, so the machine keeps the queue
/// of commands sent and not yet answered: clients pipeline whether or not the server offers it.
/// A command's validity is judged when its reply arrives, against the state the earlier replies led to.
public struct ConversationMachine: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// R3: the longest command, CRLF included.
        public var commandLineLimit = POP3Defaults.commandLineLimit
        /// R5: the longest first line of a reply, CRLF included.
        public var replyLineLimit = POP3Defaults.replyLineLimit
        /// R40: the longest SASL line.
        public var saslLineLimit = POP3Defaults.saslLineLimit
        public var pendingCommandLimit = POP3Defaults.pendingCommandLimit
        public var unknownCommandLimit = POP3Defaults.unknownCommandLimit
        public var authLineLimit = POP3Defaults.authLineLimit
        public var userNameLimit = POP3Defaults.userNameLimit
        public var passwordLimit = POP3Defaults.passwordLimit
        /// The connection is TLS from its first byte (port 995); the machine only counts octets (R36).
        public var implicitTLS = false
        /// The bytes fed are the plaintext inside TLS that a gateway terminated: logins are not cleartext (R35).
        public var transportIsTLS = false
        /// Write the plain-language notes. A gateway that keeps no transcript turns them off to save the work.
        public var annotate = true
        /// Hand over a body's octets as `bodyChunk` events; a reader that keeps no body turns them off.
        public var bodyChunks = true

        public init() {}

        /// What is kept of the client's octets after STLS until its reply: a few lines, whatever the limit
        /// (saturating: a limit near Int.max must not overflow).
        var heldAfterSTLSLimit: Int {
            let (octets, overflow) = self.commandLineLimit.multipliedReportingOverflow(by: 4)
            return overflow ? .max : octets
        }
    }

    /// A listing's and a body's state live on the heap while they last (one allocation each time a read moves
    /// them on): inline they made every idle session 160 octets larger.
    enum ServerMode: Sendable {
        case lines
        indirect case listing(PendingCommand, lines: Int, stuffed: Int, octets: Int)
        indirect case body(PendingCommand, BodyScanner)
        case opaque
    }

    enum ClientMode: Sendable {
        case lines
        /// After STLS, until its reply: what arrives meanwhile is held (R31).
        case heldAfterSTLS(ByteBuffer)
        case opaque
    }

    struct PendingCommand: Sendable {
        var verb: String
        var command: Command?
        /// `AUTH mechanism`: client lines are SASL responses until the final reply.
        var opensSASL: Bool
        var saslLines = 0
        var cancelled = false
    }

    /// A configuration made once and shared by many machines (a gateway's sessions): each holds a reference to
    /// it, not a copy of it.
    public final class SharedConfiguration: Sendable {
        public let value: Configuration
        public init(_ value: Configuration) { self.value = value }
    }

    // Stored in this order so that the one- and two-octet fields fill what the larger ones leave of their last
    // eight octets (56 fewer a session); the footprint test in the relay's tests keeps the total in view.
    private let shared: SharedConfiguration
    /// The capabilities of the last CAPA reply; nil when none was seen since the session (or TLS) began.
    public internal(set) var capabilities: [Capability]?
    /// Only a capture read mid-way has a pickup: it lives on the heap, so that every other session is 80
    /// octets smaller. Copied before a change when a copy of the machine shares it; read through it, not through
    /// ``pickup``, on every line (that getter copies the whole value out).
    private(set) var pickupBox: PickupBox?
    /// The user named by USER, APOP or AUTH.
    public internal(set) var user: String?
    /// The identity the current (or last) AUTH exchange names, once read: PLAIN's authcid, from the initial
    /// response or a response, or LOGIN's first response. Nil from each AUTH line until then.
    public internal(set) var saslIdentity: String?
    /// The `<…@…>` timestamp of the greeting, which APOP digests (RFC 1939 §7). Kept when the machine writes
    /// notes (a client that answers APOP reads it here); a gateway that writes none keeps only ``greetingStamped``.
    public internal(set) var greetingTimestamp: String?
    /// The verb of a multi-line command that got -ERR, until the next command: lines after it are R8.
    var refusedMultiLine: String?
    public internal(set) var commandCount = 0
    public internal(set) var replyCount = 0
    var unknownCommands = 0
    var suspicion = 0
    /// Pickups whose note was said (each has its number, from 0).
    var pickupsReported = 0
    /// Replies to commands that have ended, single-line or multi-line (the greeting and SASL challenges not
    /// counted). A gateway compares it with the commands it let through to know when the upstream is quiet.
    public internal(set) var completedReplies = 0
    public internal(set) var maildrop = MaildropModel()
    /// The commands awaiting their replies, oldest first.
    var pending = InlineQueue<PendingCommand>()
    /// The first octets of each side's TLS stream, until its hello is read.
    var tlsProbe: [Side: ByteBuffer] = [:]
    var tlsRead: Set<Side> = []
    /// Each side's TLS records from its first octet on, for alerts in clear.
    var tlsRecords: [Side: TLSRecordWalker] = [:]
    /// The sides whose alert in clear was said.
    var tlsAlerted: Set<Side> = []
    var serverMode: ServerMode = .lines
    var clientMode: ClientMode = .lines
    public internal(set) var state: ConversationState = .greeting
    var clientFramer: LineFramer
    /// The findings said once a session that were said already: bits, not a set of strings, so that the R35 of
    /// every plaintext login costs an idle session no set storage.
    var reported: Once = []
    public internal(set) var utf8Accepted = false
    public internal(set) var tlsActive: Bool
    /// The greeting carried a timestamp, so APOP can be used.
    public internal(set) var greetingStamped = false
    var clientBytesSeen = false
    var serverFramer: LineFramer
    /// A first client octet of 0x16 that came alone: the next one tells a TLS record from a line, so the verdict
    /// is the same however the stream was cut.
    var heldFirstClientOctet = false
    var serverBytesSeen = false
    var quitSent = false
    var clientSpokeSinceSTLS = false
    /// Client lines come through ``nextClientLine(from:at:into:)``: what waits after STLS stays with the caller.
    var readByCursor = false
    /// The server sent a SASL challenge and waits for the client's response (RFC 5034 §4).
    public internal(set) var saslChallengePending = false
    var capaSinceTLS = true
    var lastClientActivity: Double?
    /// Who is speaking for the server: the upstream, or the gateway itself.
    var serverSide: Side = .server
    var lastServerActivity: Double?

    public var configuration: Configuration { self.shared.value }
    /// The session was picked up mid-way (a capture that began after the connection did), until the first line
    /// that can be trusted on each side; nil for a session read from its start.
    public internal(set) var pickup: Pickup? {
        get { self.pickupBox?.value }
        set {
            guard let newValue else {
                self.pickupBox = nil
                return
            }
            if self.pickupBox != nil, isKnownUniquelyReferenced(&self.pickupBox!) {
                self.pickupBox!.value = newValue
            } else {
                self.pickupBox = PickupBox(newValue)
            }
        }
    }
    /// Unchecked: changed only while uniquely referenced (copy on write, as an array's storage is).
    final class PickupBox: @unchecked Sendable {
        var value: Pickup
        init(_ value: Pickup) { self.value = value }
    }

    /// What a session picked up mid-way has not seen, and what is still guessed.
    public struct Pickup: Sendable {
        /// Server lines are counted, not read, until a status line answers a command the capture shows.
        public internal(set) var serverSyncing = true
        /// Client lines are counted, not read, until one is a known command (the first may be a line's tail).
        public internal(set) var clientSyncing = true
        /// The state is a guess until a reply settles it: nothing is flagged that depends on it.
        public internal(set) var stateGuessed = true
        public internal(set) var unseenServerOctets = 0
        public internal(set) var unseenClientOctets = 0
        /// Why reading starts over: the capture began mid-session, or a hole in it.
        public internal(set) var reason = "the capture began mid-session"
        /// How many times reading started over, for the one finding each time.
        var number = 0
        /// A status line that may answer the oldest command seen, or be the first line of a multi-line reply to
        /// one sent before the capture began: the next server line, the client's next command or a close says.
        var held: (content: ByteBuffer, octets: Int)?
    }

    public init(configuration: Configuration = Configuration()) {
        self.init(shared: SharedConfiguration(configuration))
    }

    public init(shared: SharedConfiguration) {
        let configuration = shared.value
        self.shared = shared
        self.clientFramer = LineFramer(limit: configuration.commandLineLimit)
        self.serverFramer = LineFramer(limit: configuration.replyLineLimit)
        self.tlsActive = configuration.implicitTLS || configuration.transportIsTLS
        if configuration.implicitTLS {
            self.state = .encrypted
            self.serverMode = .opaque
            self.clientMode = .opaque
        }
    }

    /// The capture began after the connection did: no greeting is expected, and what came before the first line
    /// that can be trusted is counted as not seen from the start, never read as replies.
    public mutating func pickUpMidway() {
        guard self.pickupBox == nil, self.state == .greeting, !self.clientBytesSeen, !self.serverBytesSeen else {
            return
        }
        self.pickup = Pickup()
        // A placeholder: the state is guessed (`stateGuessed`) until a reply shows it.
        self.state = .authorization
    }

    /// Whether a command has been sent and not yet answered in full.
    public var awaitingReply: Bool {
        if self.saslChallengePending { return false }
        if case .opaque = self.serverMode { return false }
        if !self.pending.isEmpty { return true }
        if case .lines = self.serverMode { return false }
        return true
    }

    /// How many commands are waiting for their replies.
    public var pendingCommands: Int { self.pending.count }

    /// Whether part of a client line has been taken and its end has not come (an over-long line being read).
    public var clientLineOpen: Bool { self.clientFramer.pendingOctets > 0 }

    /// Whether the oldest command waiting for its reply is an AUTH exchange: server lines may be SASL challenges.
    public var saslExchangeOpen: Bool { self.pending.first?.opensSASL == true }

    /// The open AUTH exchange's challenges are not secret: LOGIN's prompts, PLAIN's empty one, CRAM-MD5's and
    /// DIGEST-MD5's nonces. Exports keep them as sent (other mechanisms' are masked).
    public var saslChallengesArePublic: Bool {
        guard let head = self.pending.first, head.opensSASL, case .auth(let mechanism?, _)? = head.command else {
            return false
        }
        return ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5"].contains(mechanism)
    }

    /// Whether an export masks what the server sends now.
    public var exportMasksServer: Bool { self.saslExchangeOpen && !self.saslChallengesArePublic }

    /// Whether the next client line is a SASL response rather than a command (RFC 5034 §4).
    public var expectsSASLResponse: Bool { self.pending.last?.opensSASL == true }

    /// The longest client line allowed next: a command, or a SASL line (R3, R40).
    public var clientLineLimit: Int {
        self.expectsSASLResponse ? self.configuration.saslLineLimit : self.configuration.commandLineLimit
    }

    /// Whether part of a reply has arrived and the rest has not: a reply can no longer be made up for the client.
    public var midReply: Bool {
        if self.serverFramer.pendingOctets > 0 { return true }
        if case .lines = self.serverMode { return false }
        return true
    }

    // MARK: - Feeding

    /// The client sent `bytes`. `time` (seconds, any epoch) feeds the rules that need one.
    public mutating func clientSent(_ bytes: ByteBuffer, at time: Double? = nil) -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        self.clientSent(bytes, at: time, into: &events)
        return events
    }

    /// The server sent `bytes`.
    public mutating func serverSent(_ bytes: ByteBuffer, at time: Double? = nil) -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        self.serverSent(bytes, at: time, into: &events)
        return events
    }

    public mutating func clientSent(_ bytes: ByteBuffer, at time: Double? = nil, into events: inout [ConversationEvent])
    {
        if let time { self.lastClientActivity = time }
        var input = bytes
        self.readClient(&input, into: &events)
    }

    public mutating func serverSent(_ bytes: ByteBuffer, at time: Double? = nil, into events: inout [ConversationEvent])
    {
        if let time { self.lastServerActivity = time }
        var input = bytes
        self.readServer(&input, into: &events)
    }

    /// The gateway answered the client itself (a refused line, a blocked command): read like a server reply,
    /// shown as the gateway's.
    public mutating func gatewaySent(
        _ bytes: ByteBuffer,
        at time: Double? = nil,
        into events: inout [ConversationEvent]
    ) {
        self.serverSide = .gateway
        defer { self.serverSide = .server }
        var input = bytes
        self.readServer(&input, into: &events)
    }

    /// `octets` from `side` are missing (a capture lost them). A body goes on being counted; a line being read is
    /// dropped, and reading starts again at the next line ending.
    public mutating func gap(_ side: Side, octets: Int) -> [ConversationEvent] {
        var events: [ConversationEvent] = [
            .annotation(
                side,
                "\(octets) octets from the \(side.rawValue) are missing from the capture; what follows is read with care."
            )
        ]
        switch self.state {
        case .authorization, .userAccepted, .saslExchange, .transaction, .update:
            break
        case .greeting:
            // The greeting may be what is missing: the session is picked up after the hole, as mid-way.
            self.state = .authorization
            self.pickup = Pickup()
            self.pickup?.reason = "after a hole of \(octets) octets in the \(side.rawValue)'s stream at its start"
            self.serverFramer.reset()
            self.clientFramer.reset()
            return events
        default:
            // Before the greeting, or counted not read: nothing to pick up again.
            if side == .client, case .lines = self.clientMode { self.clientFramer.reset() }
            if side == .server, case .lines = self.serverMode { self.serverFramer.reset() }
            return events
        }
        // A reply the hole falls in is incomplete here, not on the wire: ended, without blaming the server.
        let hole =
            "A hole of \(octets) octets in the capture falls in this reply: it is incomplete here, not on the wire."
        switch self.serverMode {
        case .body(let command, let scanner) where side == .server:
            events.append(
                .bodyEnd(
                    BodySummary(
                        inResponseTo: command.verb,
                        octets: scanner.octets + octets,
                        lines: scanner.lines,
                        stuffedLines: scanner.stuffedLines,
                        complete: false,
                        note: hole
                    )
                )
            )
        case .listing(let command, let lines, let stuffed, let seen) where side == .server:
            events.append(
                .bodyEnd(
                    BodySummary(
                        inResponseTo: command.verb,
                        octets: seen + octets,
                        lines: lines,
                        stuffedLines: stuffed,
                        complete: false,
                        note: hole
                    )
                )
            )
        default:
            break
        }
        self.serverMode = .lines
        self.serverFramer.reset()
        self.clientFramer.reset()
        // Which replies (or commands) the hole swallowed is not known: the commands waiting are let go, and
        // reading starts over at the next line that can be trusted, as for a session picked up mid-way.
        let unanswered = !self.pending.isEmpty
        self.pending.removeAll()
        self.saslChallengePending = false
        var pickup = Pickup()
        pickup.reason = "after a hole of \(octets) octets in the \(side.rawValue)'s stream"
        pickup.number = (self.pickupBox?.value.number ?? 0) + 1
        // After a hole either way, client lines wait for a known command too: a SASL response whose challenge
        // the hole swallowed must not be read as a command.
        // Lost commands, or lost replies to seen ones, may have moved the state on: it is a guess until shown.
        pickup.stateGuessed = side == .client || unanswered || self.pickupBox?.value.stateGuessed == true
        self.pickup = pickup
        return events
    }

    /// `1 second`, `12 seconds`.
    static func seconds(_ value: Double) -> String {
        let whole = Int(value)
        return whole == 1 ? "1 second" : "\(whole) seconds"
    }

    /// The client closed its side of the connection.
    public mutating func clientClosed(at time: Double? = nil) -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        if self.heldFirstClientOctet {
            // Nothing followed: judged on the one octet, as a stream of that octet alone is.
            var none = ByteBuffer()
            self.readClient(&none, final: true, into: &events)
        }
        self.releaseHeldReply(into: &events)
        if self.clientFramer.pendingOctets > 0 {
            events.append(
                .annotation(
                    .client,
                    "The client closed in the middle of a line; \(self.clientFramer.pendingOctets) octets were never finished."
                )
            )
            self.clientFramer.reset()
        }
        if self.state == .transaction, !self.quitSent, !self.maildrop.deleted.isEmpty {
            events.append(
                .anomaly(
                    Anomaly(
                        .update,
                        .client,
                        "the client left without QUIT; \(self.maildrop.deleted.count) deletion mark\(self.maildrop.deleted.count == 1 ? " is" : "s are") discarded, not committed"
                    )
                )
            )
        }
        if self.state == .encrypted || self.state == .tlsNegotiation {
            events.append(.annotation(.client, self.note(Annotations.clientLeftEncrypted)))
        } else if self.state != .closed {
            let inTransaction = self.state == .transaction
            events.append(
                .annotation(
                    .client,
                    self.note(
                        Annotations.clientLeft(
                            inTransaction: inTransaction,
                            marked: self.maildrop.deleted.count,
                            sentQuit: self.quitSent
                        )
                    )
                )
            )
        }
        events.append(.closed(.client))
        return events
    }

    /// The server closed its side of the connection.
    /// `by`: `gateway` when a relay closed the server's connection itself (its client had gone, a timeout,
    /// shutdown): a reply cut short then is the gateway's doing, not the server's.
    public mutating func serverClosed(at time: Double? = nil, by closer: Side = .server) -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        self.releaseHeldReply(into: &events)
        self.flushTLSProbes(into: &events)
        switch self.serverMode {
        case .listing(let command, let lines, let stuffed, let octets):
            self.truncated(command, octets: octets, lines: lines, stuffed: stuffed, by: closer, into: &events)
        case .body(let command, let scanner):
            self.truncated(
                command,
                octets: scanner.octets,
                lines: scanner.lines,
                stuffed: scanner.stuffedLines,
                by: closer,
                into: &events
            )
        case .lines, .opaque:
            break
        }
        self.serverMode = .lines
        if !self.pending.isEmpty, self.state != .encrypted, self.state != .notPOP3 {
            let verbs = self.pending.map(\.verb).joined(separator: ", ")
            events.append(
                .annotation(
                    .server,
                    "The server closed with \(self.pending.count) command\(self.pending.count == 1 ? "" : "s") unanswered: \(verbs)."
                )
            )
        } else if self.state == .transaction || self.state.isAuthorization, !self.quitSent {
            var note =
                "The server closed the connection without a QUIT from the client; there is no UPDATE, so nothing marked is removed (RFC 1939 §3, §6)."
            if let time, let last = self.lastClientActivity ?? self.lastServerActivity {
                let idle = time - last
                if idle >= POP3Defaults.shortestAutologoutSuspectSeconds, idle < POP3Defaults.minimumAutologoutSeconds,
                    self.pending.isEmpty
                {
                    events.append(
                        .anomaly(
                            Anomaly(
                                .autologout,
                                .server,
                                "the server closed an idle session after \(Self.seconds(idle)); an autologout timer is at least 10 minutes"
                            )
                        )
                    )
                }
                note += " The session had been idle for \(Self.seconds(idle))."
            }
            events.append(.annotation(.server, note))
        }
        self.pending.removeAll()
        events.append(.closed(.server))
        self.enter(.closed, "the connection is closed.", into: &events)
        return events
    }

    /// A multi-line reply that the close cut short (R53).
    private func truncated(
        _ command: PendingCommand,
        octets: Int,
        lines: Int,
        stuffed: Int,
        by closer: Side = .server,
        into events: inout [ConversationEvent]
    ) {
        let anomaly =
            closer == .gateway
            ? Anomaly(
                .unexpectedServerData,
                .gateway,
                "the gateway closed the upstream during the reply to \(command.verb), so it ends here (not the server's doing)",
                severity: .note
            )
            : Anomaly(
                .unexpectedServerData,
                .server,
                "the reply to \(command.verb) ended without its terminating dot (truncated reply)"
            )
        events.append(.anomaly(anomaly))
        let summary = BodySummary(
            inResponseTo: command.verb,
            octets: octets,
            lines: lines,
            stuffedLines: stuffed,
            complete: false,
            note: closer == .gateway
                ? "The gateway closed the upstream after \(lines) lines of the reply."
                : "The connection closed after \(lines) lines, before the reply's terminating dot (RFC 1939 §3)."
        )
        events.append(.bodyEnd(summary))
    }

    // MARK: - TLS in clear

    /// Reads the version, server name and cipher suite from the first handshake message of `side`'s TLS stream.
    /// Octets are held until the hello is whole, then counted with it, so the events do not depend on chunking.
    /// Returns false when `bytes` were not taken (no TLS to read, or already read).
    mutating func probeTLS(_ side: Side, _ bytes: ByteBuffer, into events: inout [ConversationEvent]) -> Bool {
        guard self.state == .tlsNegotiation || self.state == .encrypted, !self.tlsRead.contains(side) else {
            return false
        }
        var probe = self.tlsProbe[side] ?? ByteBuffer()
        var bytes = bytes
        probe.writeBuffer(&bytes)
        switch TLSHello.parse(probe.readableBytesView) {
        case .incomplete where probe.readableBytes < TLSHello.probeLimit:
            self.tlsProbe[side] = probe
            return true
        case .hello(let hello) where (hello.kind == .clientHello) != (side == .client):
            // A ServerHello from the client, a ClientHello from the server: not a handshake either side made, so
            // nothing in it is judged (a cipher in it is nobody's choice).
            break
        case .hello(let hello):
            events.append(.tls(side, hello))
            if hello.kind == .serverHello, hello.version < 0x0303 {
                self.report(
                    Anomaly(
                        .cleartextLogin,
                        .server,
                        "the server chose \(hello.versionName); TLS below 1.2 is deprecated (RFC 8996)"
                    ),
                    into: &events
                )
            }
            if hello.weakCipher {
                self.report(
                    Anomaly(
                        .cleartextLogin,
                        .server,
                        "the server chose the weak cipher suite \(hello.cipherName ?? "?") (RFC 7465)"
                    ),
                    into: &events
                )
            }
        case .notTLS:
            // The side's first record may be an alert: the other side's hello was refused at once (the walk
            // below finds it, whole or as it arrives).
            break
        case .incomplete:
            break
        }
        self.tlsRead.insert(side)
        self.tlsProbe[side] = nil
        self.countTLS(side, probe, into: &events)
        return true
    }

    /// A TLS side's octets counted, an alert in clear said right after its last octet: the same events however
    /// the reads were cut.
    mutating func countTLS(_ side: Side, _ bytes: ByteBuffer, into events: inout [ConversationEvent]) {
        let total = bytes.readableBytes
        guard self.state == .tlsNegotiation || self.state == .encrypted,
            let alert = self.tlsRecords[side, default: TLSRecordWalker()].walk(bytes),
            let note = self.noteTLSAlert(side, fatal: alert.fatal, name: alert.name)
        else {
            events.append(.opaque(side, octets: total))
            return
        }
        if alert.end > 0 { events.append(.opaque(side, octets: alert.end)) }
        events.append(note)
        if total > alert.end { events.append(.opaque(side, octets: total - alert.end)) }
    }

    /// A handshake ended by an alert in clear: said as the sender's decision, never as a fault of the other side
    /// (a client that rejects a certificate is within its rights). Said once per side.
    mutating func noteTLSAlert(_ side: Side, fatal: Bool, name: String) -> ConversationEvent? {
        guard !self.tlsAlerted.contains(side) else { return nil }
        self.tlsAlerted.insert(side)
        let who = side == .client ? "client" : "server"
        let why: String =
            switch name {
            case "bad_certificate", "unknown_ca", "certificate_unknown", "certificate_expired",
                "unsupported_certificate", "certificate_revoked":
                side == .client
                    ? ": it did not accept the server's certificate" : ": it did not accept the client's certificate"
            case "protocol_version", "insufficient_security", "handshake_failure":
                ": the two sides share no version or cipher suite it accepts"
            default: ""
            }
        return .annotation(
            side,
            "The \(who) ended the TLS handshake with \(fatal ? "a fatal" : "a warning") alert, \(name)\(why) (RFC 8446 §6.2)."
        )
    }

    /// Octets held for a TLS hello that never completed are counted at the close.
    mutating func flushTLSProbes(into events: inout [ConversationEvent]) {
        for side in [Side.client, .server] {
            if let probe = self.tlsProbe.removeValue(forKey: side), probe.readableBytes > 0 {
                events.append(.opaque(side, octets: probe.readableBytes))
            }
        }
    }

    // MARK: - Helpers shared by both sides

    /// A note, or nothing when the configuration asks for no notes.
    @inline(__always)
    func note(_ text: @autoclosure () -> String) -> String {
        self.configuration.annotate ? text() : ""
    }

    mutating func report(_ anomaly: Anomaly, into events: inout [ConversationEvent]) {
        // A reply the gateway made (a refusal in place of the greeting, a response code before any CAPA) is its
        // decision, not a server's fault (R9, R11).
        if self.serverSide == .gateway, anomaly.side == .server { return }
        events.append(.anomaly(anomaly))
    }

    /// The rules that would repeat on every line, each reported once a session.
    struct Once: OptionSet, Sendable {
        let rawValue: UInt16
        static let r1ClientCR = Once(rawValue: 1 << 0)
        static let r1ClientLF = Once(rawValue: 1 << 1)
        static let r1ServerCR = Once(rawValue: 1 << 2)
        static let r1ServerLF = Once(rawValue: 1 << 3)
        static let r10Server = Once(rawValue: 1 << 4)
        static let r11Early = Once(rawValue: 1 << 5)
        static let r26Weak = Once(rawValue: 1 << 6)
        static let r30 = Once(rawValue: 1 << 7)
        static let r31Server = Once(rawValue: 1 << 8)
        static let r33 = Once(rawValue: 1 << 9)
        static let r35 = Once(rawValue: 1 << 10)
    }

    /// Reports an anomaly only the first time its rule comes up.
    mutating func reportOnce(_ key: Once, _ anomaly: Anomaly, into events: inout [ConversationEvent]) {
        if self.serverSide == .gateway, anomaly.side == .server { return }
        guard self.reported.insert(key).inserted else { return }
        events.append(.anomaly(anomaly))
    }

    mutating func enter(_ newState: ConversationState, _ note: String, into events: inout [ConversationEvent]) {
        guard newState != self.state else { return }
        self.state = newState
        events.append(.stateChanged(newState, note: note))
    }

    func advertises(_ name: String) -> Bool? {
        guard let capabilities = self.capabilities else { return nil }
        return capabilities.contains { $0.name == name }
    }

    /// The session shows signs of not being POP3 (R49): past a small threshold, stop reading it.
    /// Only signs a POP3 server would not give count: a client that speaks first, lines that are not status lines.
    mutating func suspect(_ reason: String, weight: Int = 1, into events: inout [ConversationEvent]) {
        guard self.state != .transaction, self.state != .notPOP3, self.state != .closed else { return }
        self.suspicion += weight
        guard self.suspicion >= 4 else { return }
        events.append(
            .anomaly(
                Anomaly(
                    .unknownCommands,
                    .client,
                    "this does not look like POP3 (\(reason)); the rest of the connection is counted, not read"
                )
            )
        )
        self.enter(.notPOP3, "the rest of the session is only counted.", into: &events)
        self.clientMode = .opaque
        self.serverMode = .opaque
        self.pending.removeAll()
    }
}
