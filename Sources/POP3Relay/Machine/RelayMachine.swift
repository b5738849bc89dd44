import Logging
import NIOCore
import POP3Core
import POP3Rules

/// How a session ended, for its log line and its transcript.
public enum SessionEnd: String, Sendable, Hashable {
    case clientQuit = "the client quit"
    case clientVanished = "the client closed without QUIT"
    case upstreamClosed = "the upstream closed the connection"
    case upstreamUnreachable = "the upstream was unreachable"
    case greetingTimeout = "the upstream sent no greeting in time"
    case idleTimeout = "idle timeout"
    case clientStalled = "the client stopped reading what it was sent"
    case lineTimeout = "a command line took too long to complete"
    case loginTimeout = "the login took too long"
    case refused = "the gateway did not admit the client"
    case atCapacity = "the gateway was at capacity"
    case outOfDescriptors = "the gateway ran out of file descriptors"
    case handshakeFailed = "the TLS handshake with the client failed"
    case handshakeTimeout = "the client did not finish its TLS handshake in time"
    case tlsOnPlaintextPort = "the client spoke TLS on a plaintext port"
    case alpnRefused = "the client's ALPN did not offer pop3"
    case limited = "a rules limit refused the client, for now"
    /// TLS passed through after STLS: whether QUIT was sent inside it cannot be seen.
    case insideTLS = "the session ended inside TLS (passed through, not seen)"
    case proxyRefused = "the PROXY protocol header was missing, malformed or not from a trusted balancer"
    case proxyTimeout = "no PROXY protocol header came in time"
    case shutdown = "the gateway shut down"
    case error = "a connection error"
}

extension SessionEnd: CaseIterable {
    /// A short name for a metrics label, the case's own.
    public var label: String {
        switch self {
        case .clientQuit: "client_quit"
        case .clientVanished: "client_vanished"
        case .upstreamClosed: "upstream_closed"
        case .upstreamUnreachable: "upstream_unreachable"
        case .greetingTimeout: "greeting_timeout"
        case .idleTimeout: "idle_timeout"
        case .clientStalled: "client_stalled"
        case .lineTimeout: "line_timeout"
        case .loginTimeout: "login_timeout"
        case .refused: "refused"
        case .atCapacity: "at_capacity"
        case .outOfDescriptors: "out_of_descriptors"
        case .handshakeFailed: "handshake_failed"
        case .handshakeTimeout: "handshake_timeout"
        case .tlsOnPlaintextPort: "tls_on_plaintext_port"
        case .alpnRefused: "alpn_refused"
        case .limited: "limited"
        case .insideTLS: "inside_tls"
        case .proxyRefused: "proxy_refused"
        case .proxyTimeout: "proxy_timeout"
        case .shutdown: "shutdown"
        case .error: "error"
        }
    }
}

/// What the admission step decided for a client, before any upstream connection is made.
public enum AdmissionDecision: Sendable, Hashable {
    case admit
    /// The client is told `-ERR [SYS/PERM] reason` and the connection closes.
    case refuse(reason: String)
    /// The client is told `-ERR [SYS/TEMP] reason` (try again later) and the connection closes.
    case busy(reason: String)
    /// A rules line refused the client.
    case rule(RuleRefusal)

    public struct RuleRefusal: Sendable, Hashable {
        /// For the client (and the log).
        public var reason: String
        /// Where the rule is, `file:line`, for the log and the transcript.
        public var rule: String
        /// A limit (`-ERR [SYS/TEMP]`), not an access line (`-ERR [SYS/PERM]`).
        public var temporary: Bool
        /// Closed without a reply.
        public var silent: Bool
    }
}

/// One relayed session, as a pure machine: events in, actions out. No channels, no clock, no I/O.
///
/// ```
///  admitting ──admit──▶ connecting ──connected──▶ awaitingGreeting ──greeting──▶ relaying ──STLS +OK──▶ tunnel
///      │ refuse             │ failed                  │ timeout                   │
///      ▼                    ▼                         ▼                           │ client gone after QUIT
///   closing(refused)   closing(unreachable)     closing(greetingTimeout)          ▼
///                                                              awaitingQuitReply(deadline) ──▶ closing(clientQuit)
///  any state ──client vanished──▶ closing(clientVanished): the upstream is closed, never sent QUIT (invariant 3)
///  closing ──both sides closed──▶ closed(reason)
/// ```
///
/// Each client line is framed and parsed once, by the conversation machine's cursor
/// (``ConversationMachine/nextClientLine(from:at:into:)``), and decided here: forwarded, answered by the gateway
/// (an over-long or malformed line), or held (behind STLS). Lines read before the greeting are decided at once
/// and held for the upstream until it greets. The replies the client is owed are one ``AnswerQueue``, so replies
/// keep the order of the commands (invariant 2). Upstream bytes are read by the machine before they are written,
/// a line at a time (``ConversationMachine/nextServerUnit(from:at:into:)``); message bodies go on as slices of
/// what was read. A client that half-closes still gets every reply it is owed, and its QUIT goes upstream.
struct RelayMachine {
    enum Side: Sendable, Hashable {
        case client
        case upstream
    }

    struct Settings: Sendable {
        /// The upstream's name, for the gateway's replies and the log.
        var upstream: String
        var commandLineLimit = POP3Defaults.commandLineLimit
        var idleTimeout: TimeAmount = .minutes(10)
        var greetingTimeout: TimeAmount = .seconds(30)
        /// From a command line's first octet to its end (a client dripping one octet at a time is cut).
        var lineTimeout: TimeAmount = .seconds(60)
        /// From the connection to a finished login.
        var loginTimeout: TimeAmount = .minutes(3)
        /// How long the upstream may take to answer the QUIT of a client that has gone.
        var quitReplyTimeout: TimeAmount = .seconds(5)
        /// Write the plain-language notes (only when someone reads the events).
        var annotate = true
        /// Someone reads the events (a transcript, the live view, the end line): without one, the read paths
        /// emit no ``Action/record(_:)`` and keep their events array's room for the next read.
        var recording = true
        /// Emit ``Action/export(_:)`` for a pcap export.
        var export = false
        /// Client octets read and not yet passed on before reading the client stops.
        var maximumClientBacklog = 64 * 1024
        /// The client's connection is TLS from its first octet: the session starts once the handshake is done.
        var clientTLS = false
        /// On a plaintext port with a certificate: the gateway answers STLS itself and offers it in CAPA.
        var terminatesSTLS = false
        /// Before TLS, USER, PASS, APOP and AUTH are refused, not forwarded.
        var requireTLS = false
        /// The gateway begins TLS with the upstream by STLS after its greeting, before any client line goes on.
        var upstreamSTLS = false
        var handshakeTimeout: TimeAmount = .seconds(10)
        /// The rules, with the counts every session shares; nil without rules. The session keeps the rules in
        /// force when it starts (a reload applies to the sessions after it).
        var rules: RulesGate? = nil
        /// Every connection begins with a PROXY protocol header from one of these balancers, within the time.
        var proxy: Proxy? = nil
    }

    struct Proxy: Sendable {
        var trusted: AddressSet
        var timeout: TimeAmount = .seconds(5)
    }

    /// What a pcap export is shown: client lines with their secrets still in them (the export masks them).
    enum Export: Sendable, Hashable {
        case clientLine(ByteBuffer, LineFramer.Ending, saslResponse: Bool)
        case clientOverlongLine(prefix: ByteBuffer, octets: Int, saslResponse: Bool)
        case fromClient(ByteBuffer)
        case toClient(ByteBuffer, saslExchange: Bool)
        /// TLS the gateway terminates began after STLS: the plaintext inside it follows.
        case tlsBegan(String)
    }

    enum Action: Sendable, Hashable {
        /// Ask the admission step; answer with ``admitted(_:now:into:)``.
        case admit
        case connectUpstream
        case write(Side, ByteBuffer)
        case flush(Side)
        case close(Side)
        /// Make sure the timer fires by this deadline; answer with ``deadlineReached(now:into:)``.
        case arm(NIODeadline)
        /// Reading a side may go on, if it was held back.
        case resumeReading(Side)
        case record([ConversationEvent])
        case export(Export)
        case log(Logger.Level, String)
        /// Both sides are closed: the session's end record.
        case ended(SessionEnd)
        /// The gateway's +OK to STLS is written and flushed: TLS begins on the client's connection now, and
        /// ``clientTLSEstablished(version:now:into:)`` reports its end.
        case startTLS
        /// The upstream said +OK to the gateway's STLS: TLS begins on the upstream connection now, and
        /// ``upstreamTLSEstablished(version:now:into:)`` reports its end.
        case startUpstreamTLS
        /// The client's handshake ends here with a no_application_protocol alert, then its connection closes.
        case refuseHandshake
        /// The PROXY header named the client (nil: the balancer's own connection, `via` nil too): the session's
        /// record starts with it.
        case identified(client: ProxyHeader.Endpoint?, via: RuleAddress?)
        /// After the PROXY header on a TLS port: TLS goes in front now, and `leftover` (the ClientHello's first
        /// octets, read with the header) is handed to it.
        case beginClientTLS(leftover: ByteBuffer)
    }

    /// Before the upstream greets. What the client sends meanwhile waits, unread, as a server's socket would
    /// keep it: the machine reads it after the greeting, as the server does.
    struct Waiting: Sendable {
        var greetingDeadline: NIODeadline
    }

    struct Relaying: Sendable {
        var answers = AnswerQueue()
        /// The client shut down its side after QUIT: the upstream's answer is awaited until then.
        var quitDeadline: NIODeadline? = nil
        /// The upstream's CAPA listing, while the gateway edits it for what it offers.
        var capa: CAPAEdit? = nil
        /// After the gateway's +OK to STLS, until the handshake ends by then.
        var tlsDeadline: NIODeadline? = nil
    }

    /// An upstream CAPA listing on its way to the client.
    struct CAPAEdit: Sendable {
        var sawSTLS = false
    }

    private enum State: Sendable {
        /// Behind a balancer: its PROXY header comes first, by the deadline.
        case awaitingProxyHeader(deadline: NIODeadline)
        /// A TLS client's handshake, before anything else: no upstream is asked for a client that cannot do it.
        case handshaking(deadline: NIODeadline)
        case admitting
        case connecting(Waiting)
        case awaitingGreeting(Waiting)
        /// The gateway's STLS to the upstream, then its handshake; the client's lines wait, unread.
        case upstreamTLS(Waiting, handshaking: Bool)
        case relaying(Relaying)
        /// After an accepted STLS: bytes pass both ways, counted, not read.
        case tunnel
        case awaitingQuitReply(deadline: NIODeadline)
        case closing(SessionEnd)
        case closed(SessionEnd)
        /// Only while a payload is being changed in place, so that it is not copied.
        case modifying
    }

    private enum UpstreamConnection: Sendable {
        case none
        case connecting
        case open
        case closed
    }

    /// What an input buffer becomes once read to the end: the read's storage is let go, so an idle session
    /// holds none.
    private static let drained = ByteBuffer()

    /// One listener's settings, made once and shared by its sessions: an idle session does not hold a copy.
    final class SharedSettings: Sendable {
        let value: Settings
        /// The conversation machine's, shared the same way.
        let conversation: ConversationMachine.SharedConfiguration

        init(_ value: Settings) {
            self.value = value
            var configuration = ConversationMachine.Configuration()
            configuration.annotate = value.annotate
            configuration.commandLineLimit = value.commandLineLimit
            // The relay passes a body on as slices of what it read; its octets as events are for a reader of
            // the events (a transcript with bodies), so without one none are made.
            configuration.bodyChunks = value.annotate
            self.conversation = ConversationMachine.SharedConfiguration(configuration)
        }
    }

    // In this order, the one-octet fields fill what the larger ones leave of their last eight octets: every idle
    // session holds this, so the layout is worth its octets.
    private let shared: SharedSettings
    var settings: Settings { self.shared.value }
    private var state: State = .admitting
    private var clientOpen = true
    private var clientInputClosed = false
    private var upstream: UpstreamConnection = .none
    private var clientWritable = true
    private var upstreamWritable = true
    private var quitForwarded = false
    /// Whether the client's side is encrypted, with TLS the gateway terminates.
    private(set) var clientEncrypted = false
    private(set) var conversation: ConversationMachine
    private var clientInput = Self.drained
    private var upstreamInput = Self.drained
    private var lastActivity: NIODeadline
    private let startedAt: NIODeadline
    private let wallClockAtStart: Double
    private(set) var clientOctets = 0
    private(set) var upstreamOctets = 0
    /// The rules this session keeps, and the client's address as they see it.
    private let rules: RulesGate.Snapshot?
    /// When the client line now being read began; nil between lines.
    private var lineStarted: NIODeadline?
    private var loginDeadline: NIODeadline?
    private var armed: NIODeadline?
    /// Why the upstream connection failed before its greeting, for the client's reply.
    private var upstreamFailure: String?
    /// The client's address for the rules: the peer's, or the one a trusted PROXY header named.
    private(set) var clientAddress: RuleAddress?
    /// The login under way, for the rules: who it names, and whether its AUTH exchange has carried
    /// credentials (an initial response, or a response that is not `*`).
    private var login = Login()
    /// The gateway cancelled an AUTH exchange (a blocked or denied user named in it): its reply to the client,
    /// in place of the upstream's answer to the cancel.
    private var authReplyInstead: ByteBuffer?
    /// An events array with room, lent by the executor for one event and empty between events (so an idle
    /// session holds none): the read paths fill it rather than allocate and grow one for each read.
    private var spareEvents: [ConversationEvent] = []

    private struct Login {
        var user: String?
        var saslCredentials = false
    }

    /// `now` and `wallClock` (seconds since 1970) are the same instant: transcripts get wall-clock times.
    init(settings: Settings, now: NIODeadline, wallClock: Double) {
        self.init(shared: SharedSettings(settings), now: now, wallClock: wallClock)
    }

    init(shared: SharedSettings, now: NIODeadline, wallClock: Double) {
        self.shared = shared
        let settings = shared.value
        self.conversation = ConversationMachine(shared: shared.conversation)
        self.lastActivity = now
        self.loginDeadline = now + settings.loginTimeout
        self.startedAt = now
        self.wallClockAtStart = wallClock
        self.rules = settings.rules?.snapshot
    }

    func wallClock(_ now: NIODeadline) -> Double {
        self.wallClockAtStart + Double((now - self.startedAt).nanoseconds) / 1e9
    }

    /// Whether a side may be read now: reads stop while the other side cannot take more (invariant 4).
    func mayRead(_ side: Side) -> Bool {
        switch side {
        case .client:
            return self.clientBacklog < self.settings.maximumClientBacklog && self.upstreamWritable
        case .upstream:
            return self.clientWritable
        }
    }

    private var clientBacklog: Int { self.clientInput.readableBytes }

    // MARK: - Connection events

    /// `address`: the client's, for the rules (the peer's, or what a trusted PROXY header says).
    mutating func clientConnected(now: NIODeadline, address: RuleAddress? = nil, into actions: inout [Action]) {
        guard case .admitting = self.state else { return }
        self.clientAddress = address
        if let proxy = self.settings.proxy {
            guard let address, proxy.trusted.contains(address) else {
                let peer = address.map { "\($0)" } ?? "an unknown address"
                actions.append(
                    .log(.info, "closing a connection from \(peer): not a trusted balancer for the PROXY protocol")
                )
                self.state = .closing(.proxyRefused)
                actions.append(.close(.client))
                return
            }
            self.state = .awaitingProxyHeader(deadline: now + proxy.timeout)
            self.rearm(now: now, into: &actions)
            return
        }
        self.begin(now: now, into: &actions)
    }

    /// The client is known: TLS first where the port has it, then admission.
    private mutating func begin(now: NIODeadline, into actions: inout [Action]) {
        if self.settings.clientTLS {
            self.state = .handshaking(deadline: now + self.settings.handshakeTimeout)
            self.rearm(now: now, into: &actions)
            return
        }
        self.state = .admitting
        actions.append(.admit)
    }

    /// Reads the balancer's PROXY header from what has come: the client it names is the session's client from
    /// here on (for the rules, the record, the logs); what follows the header is the client's own.
    private mutating func readProxyHeader(now: NIODeadline, into actions: inout [Action]) {
        switch ProxyHeader.parse(self.clientInput.readableBytesView) {
        case .needMoreData:
            return
        case .invalid(let why):
            actions.append(.log(.info, "closing a connection from the balancer \(self.clientName): \(why)"))
            self.clientInput = Self.drained
            self.state = .closing(.proxyRefused)
            actions.append(.close(.client))
        case .header(let header):
            self.clientInput.moveReaderIndex(forwardBy: header.length)
            let balancer = self.clientAddress
            if let source = header.source, let address = RuleAddress(source.address) {
                self.clientAddress = address
                actions.append(.identified(client: source, via: balancer))
            } else {
                // v2 LOCAL, v1 UNKNOWN: the balancer's own connection (a health check).
                actions.append(.identified(client: nil, via: nil))
            }
            if let tls = header.tls {
                let what = [tls.version, tls.cipher].compactMap { $0 }.joined(separator: ", ")
                let name = balancer.map { "\($0)" } ?? "unknown"
                actions.append(
                    .log(.debug, "the balancer \(name) says the client used TLS\(what.isEmpty ? "" : " (\(what))")")
                )
            }
            let leftover = self.clientInput
            self.clientInput = Self.drained
            self.begin(now: now, into: &actions)
            if self.settings.clientTLS {
                // The TLS handler was not in front while the header was read: it goes there now.
                actions.append(.beginClientTLS(leftover: leftover))
            } else if leftover.readableBytes > 0 {
                self.clientInput = leftover
            }
        }
    }

    /// The client's TLS handshake is done (`version` as negotiated): the session begins.
    mutating func clientTLSEstablished(version: String, now: NIODeadline, into actions: inout [Action]) {
        if case .relaying(var relaying) = self.state, relaying.tlsDeadline != nil {
            // After STLS: POP3 goes on inside TLS, back in AUTHORIZATION, capabilities forgotten (RFC 2595 §4).
            self.state = .modifying
            relaying.tlsDeadline = nil
            self.state = .relaying(relaying)
            self.clientEncrypted = true
            self.lastActivity = now
            let note = ConversationEvent.annotation(
                .gateway,
                "\(version) with the client after STLS; the gateway holds the other end of it."
            )
            actions.append(.record([note] + self.conversation.tlsEstablished()))
            if self.settings.export { actions.append(.export(.tlsBegan(version))) }
            self.rearm(now: now, into: &actions)
            actions.append(.resumeReading(.client))
            return
        }
        guard case .handshaking = self.state else { return }
        self.clientEncrypted = true
        self.state = .admitting
        self.lastActivity = now
        actions.append(
            .record([.annotation(.gateway, "\(version) with the client; the gateway holds the other end of it.")])
        )
        actions.append(.admit)
    }

    /// A side's first TLS handshake message, read as it passed: the client's ClientHello, the gateway's
    /// ServerHello.
    mutating func tlsHelloSeen(_ hello: TLSHello, into actions: inout [Action]) {
        actions.append(.record([.tls(hello.kind == .clientHello ? .client : .gateway, hello)]))
        // ALPACA: a client that names its protocols and not POP3 is talking to the wrong service, or is made to.
        guard hello.kind == .clientHello, let offered = hello.alpn, !offered.contains("pop3") else { return }
        let list = offered.joined(separator: ", ")
        actions.append(.log(.info, "refusing a TLS client whose ALPN offers \(list), not pop3 (cross-protocol)"))
        actions.append(
            .record([
                .annotation(
                    .gateway,
                    "The client's ALPN offers \(list) and not pop3: the handshake is refused (no_application_protocol), as RFC 7301 and the ALPACA advisory ask."
                )
            ])
        )
        if self.upstream == .open { actions.append(.close(.upstream)) }
        self.state = .closing(.alpnRefused)
        actions.append(.refuseHandshake)
    }

    mutating func admitted(_ decision: AdmissionDecision, now: NIODeadline, into actions: inout [Action]) {
        guard case .admitting = self.state else { return }
        switch decision {
        case .admit:
            self.upstream = .connecting
            self.state = .connecting(Waiting(greetingDeadline: now + self.settings.greetingTimeout))
            actions.append(.connectUpstream)
            self.rearm(now: now, into: &actions)
        case .refuse(let reason):
            self.refuse(.err(reason, code: .sysPerm), .refused, now: now, into: &actions)
        case .busy(let reason):
            self.refuse(.err(reason, code: .sysTemp), .atCapacity, now: now, into: &actions)
        case .rule(let refusal):
            let end: SessionEnd = refusal.temporary ? .limited : .refused
            let note = "The gateway refused the client by the rule at \(refusal.rule): \(refusal.reason)."
            actions.append(.log(.info, "refused client=\(self.clientName): \(refusal.reason) (\(refusal.rule))"))
            guard !refusal.silent else {
                actions.append(
                    .record([.annotation(.gateway, note + " The connection is closed without a reply.")])
                )
                actions.append(.close(.client))
                self.state = .closing(end)
                return
            }
            actions.append(.record([.annotation(.gateway, note)]))
            let code: ResponseCode = refusal.temporary ? .sysTemp : .sysPerm
            self.refuse(.err(refusal.reason, code: code), end, now: now, into: &actions)
        }
    }

    /// The client's address as log lines give it, the same form every time (IPv4-mapped IPv6 as IPv4), so
    /// that fail2ban-style tools can match it.
    private var clientName: String { self.clientAddress.map { "\($0)" } ?? "unknown" }

    private mutating func refuse(_ reply: Reply, _ end: SessionEnd, now: NIODeadline, into actions: inout [Action]) {
        var events: [ConversationEvent] = []
        self.sendOwnReply(reply, now: now, events: &events, into: &actions)
        actions.append(.record(events))
        actions.append(.flush(.client))
        actions.append(.close(.client))
        self.state = .closing(end)
    }

    mutating func upstreamConnected(now: NIODeadline, into actions: inout [Action]) {
        self.upstream = .open
        guard case .connecting(var waiting) = self.state else {
            // The client left while the connection was being made: close it, nothing was sent on it.
            actions.append(.close(.upstream))
            return
        }
        waiting.greetingDeadline = now + self.settings.greetingTimeout
        self.state = .awaitingGreeting(waiting)
        self.rearm(now: now, into: &actions)
        actions.append(.resumeReading(.upstream))
    }

    /// `outOfDescriptors`: the gateway itself could not make the connection (EMFILE, ENFILE), so the upstream is
    /// not to blame and the client is told so.
    mutating func upstreamConnectFailed(
        _ error: String,
        outOfDescriptors: Bool = false,
        now: NIODeadline,
        into actions: inout [Action]
    ) {
        self.upstream = .closed
        guard case .connecting = self.state else {
            self.finishIfDone(now: now, into: &actions)
            return
        }
        if outOfDescriptors {
            // Logged by the executor, rate-limited: at this point many sessions fail alike.
            self.replyAndClose(
                "the gateway is out of file descriptors; try again later",
                reason: .outOfDescriptors,
                now: now,
                into: &actions
            )
            return
        }
        actions.append(.log(.warning, "cannot reach the upstream \(self.settings.upstream): \(error)"))
        self.replyAndClose(
            "upstream \(self.settings.upstream) is unreachable",
            reason: .upstreamUnreachable,
            now: now,
            into: &actions
        )
    }

    // MARK: - Client events

    mutating func clientRead(_ bytes: ByteBuffer, now: NIODeadline, into actions: inout [Action]) {
        self.clientOctets += bytes.readableBytes
        self.lastActivity = now
        // Between the +OK to STLS and the handshake's end the TLS handler takes every octet; none is plaintext.
        if self.startingTLS { return }
        switch self.state {
        case .awaitingProxyHeader:
            if self.clientInput.readableBytes == 0 {
                self.clientInput = bytes
            } else {
                var bytes = bytes
                self.clientInput.writeBuffer(&bytes)
            }
            self.readProxyHeader(now: now, into: &actions)
        case .tunnel:
            var events: [ConversationEvent] = []
            self.conversation.clientSent(bytes, at: self.wallClock(now), into: &events)
            if !events.isEmpty { actions.append(.record(events)) }
            if self.settings.export { actions.append(.export(.fromClient(bytes))) }
            actions.append(.write(.upstream, bytes))
        case .connecting, .awaitingGreeting, .relaying, .upstreamTLS:
            if self.clientInput.readableBytes == 0 {
                self.clientInput = bytes  // no copy: lines are forwarded as slices of what was read
            } else {
                var bytes = bytes
                self.clientInput.writeBuffer(&bytes)
            }
            if case .relaying = self.state {
                self.readClientLines(now: now, into: &actions)
            } else if case .upstreamTLS = self.state {
                // After the greeting: the client may speak; its lines go on once TLS with the upstream is up.
            } else {
                var events: [ConversationEvent] = []
                self.conversation.clientSpokeEarly(into: &events)
                if !events.isEmpty { actions.append(.record(events)) }
            }
        case .handshaking, .admitting, .awaitingQuitReply, .closing, .closed, .modifying:
            break
        }
    }

    mutating func clientReadComplete(into actions: inout [Action]) {
        // Lines are flushed as they are decided; raw bytes once per burst of reads.
        if case .tunnel = self.state, self.upstream == .open { actions.append(.flush(.upstream)) }
    }

    /// The client will send nothing more (it shut down its side, as `printf … | nc` does). What it sent is
    /// still answered, and its QUIT goes upstream; without a QUIT, both sides close once nothing is owed.
    mutating func clientInputClosed(now: NIODeadline, into actions: inout [Action]) {
        guard !self.clientInputClosed else { return }
        self.clientInputClosed = true
        switch self.state {
        case .handshaking:
            self.closeBoth(.handshakeFailed, into: &actions)
        case .awaitingProxyHeader:
            actions.append(
                .log(
                    .info,
                    "closing a connection from the balancer \(self.clientName): it ended before its PROXY header"
                )
            )
            self.closeBoth(.proxyRefused, into: &actions)
        case .tunnel:
            self.closeBoth(.insideTLS, into: &actions)
        case .admitting:
            self.closeBoth(self.quitForwarded ? .clientQuit : .clientVanished, into: &actions)
        case .connecting, .awaitingGreeting, .relaying:
            self.closeIfClientDone(now: now, into: &actions)
        case .upstreamTLS, .awaitingQuitReply, .closing, .closed, .modifying:
            // With TLS to the upstream being made, the client's lines are decided once it is up.
            break
        }
    }

    /// The client's connection is gone (closed, reset, failed).
    mutating func clientClosed(now: NIODeadline, into actions: inout [Action]) {
        guard self.clientOpen else { return }
        self.clientOpen = false
        switch self.state {
        case .closing, .closed:
            break
        case .relaying where self.quitForwarded && self.upstream == .open && self.conversation.state != .closed,
            .tunnel where self.quitForwarded && self.upstream == .open:
            // The client asked for QUIT: let the upstream answer it (and commit), but not forever.
            self.state = .awaitingQuitReply(deadline: now + self.settings.quitReplyTimeout)
            self.rearm(now: now, into: &actions)
        case .awaitingQuitReply:
            break
        case .handshaking:
            self.state = .closing(.handshakeFailed)
        case .awaitingProxyHeader:
            self.state = .closing(.proxyRefused)
        case .tunnel:
            if self.upstream == .open { actions.append(.close(.upstream)) }
            self.state = .closing(.insideTLS)
        default:
            // Invariant 3: closing without QUIT leaves every DELE mark uncommitted.
            if self.upstream == .open { actions.append(.close(.upstream)) }
            self.state = .closing(self.quitForwarded ? .clientQuit : .clientVanished)
        }
        self.finishIfDone(now: now, into: &actions)
    }

    /// An I/O error on the client's connection (a reset, a broken pipe): it is gone.
    mutating func clientFailed(_ error: String, now: NIODeadline, into actions: inout [Action]) {
        if self.startingTLS || { if case .handshaking = self.state { true } else { false } }() {
            // The client's doing (garbage, plaintext, a version or cipher it cannot have): said once, at info.
            actions.append(.log(.info, "TLS handshake with the client failed: \(error)"))
            actions.append(.record([.annotation(.client, "The TLS handshake failed: \(error).")]))
            self.state = .closing(.handshakeFailed)
            // After STLS the upstream is open, and nothing will come for it (invariant 3: no QUIT).
            if self.upstream == .open { actions.append(.close(.upstream)) }
        } else {
            actions.append(.log(.debug, "client connection error: \(error)"))
        }
        if self.clientOpen { actions.append(.close(.client)) }
        self.clientClosed(now: now, into: &actions)
    }

    // MARK: - Upstream events

    mutating func upstreamRead(_ bytes: ByteBuffer, now: NIODeadline, into actions: inout [Action]) {
        self.upstreamOctets += bytes.readableBytes
        // A session waiting on a slow upstream (or receiving a long RETR) is not idle.
        self.lastActivity = now
        switch self.state {
        case .tunnel, .awaitingQuitReply, .closing:
            // Passed on unread (TLS), or to a client that is going: the machine still counts it.
            var events: [ConversationEvent] = []
            self.conversation.serverSent(bytes, at: self.wallClock(now), into: &events)
            if !events.isEmpty { actions.append(.record(events)) }
            if self.clientOpen, case .tunnel = self.state {
                if self.settings.export { actions.append(.export(.toClient(bytes, saslExchange: false))) }
                actions.append(.write(.client, bytes))
            }
        case .awaitingGreeting, .relaying:
            if self.upstreamInput.readableBytes == 0 {
                self.upstreamInput = bytes
            } else {
                var bytes = bytes
                self.upstreamInput.writeBuffer(&bytes)
            }
            self.readUpstreamUnits(now: now, into: &actions)
        case .upstreamTLS(_, let handshaking):
            guard !handshaking else { break }
            var bytes = bytes
            self.upstreamInput.writeBuffer(&bytes)
            self.readUpstreamSTLSReply(now: now, into: &actions)
        case .handshaking, .awaitingProxyHeader, .admitting, .connecting, .closed, .modifying:
            break
        }
    }

    /// An error on the upstream's connection (a failed TLS handshake, a reset): logged, and the connection
    /// closed; its close decides what the client is told.
    mutating func upstreamFailed(_ reason: String, now: NIODeadline, into actions: inout [Action]) {
        switch self.state {
        case .connecting, .awaitingGreeting, .upstreamTLS:
            actions.append(.log(.warning, "the connection to the upstream \(self.settings.upstream) failed: \(reason)"))
            self.upstreamFailure = reason
        default:
            actions.append(.log(.info, "upstream connection error: \(reason)"))
        }
        if self.upstream == .open { actions.append(.close(.upstream)) }
    }

    mutating func upstreamReadComplete(into actions: inout [Action]) {
        if self.clientOpen { actions.append(.flush(.client)) }
    }

    mutating func upstreamClosed(now: NIODeadline, into actions: inout [Action]) {
        guard self.upstream == .open else { return }
        self.upstream = .closed
        switch self.state {
        case .connecting where self.upstreamFailure != nil, .awaitingGreeting where self.upstreamFailure != nil,
            .upstreamTLS:
            // Logged with its reason already (TLS, most often): the client is told the gateway could not get through.
            self.replyAndClose(
                "the gateway could not make a secure connection to upstream \(self.settings.upstream)",
                reason: .upstreamUnreachable,
                now: now,
                into: &actions
            )
        case .connecting, .awaitingGreeting:
            actions.append(.log(.warning, "the upstream \(self.settings.upstream) closed before its greeting"))
            self.recordUpstreamVanished(now: now, into: &actions)
            self.replyAndClose(
                "upstream \(self.settings.upstream) closed before its greeting",
                reason: .upstreamClosed,
                now: now,
                into: &actions
            )
        case .relaying(var relaying):
            self.state = .modifying
            if self.quitForwarded && self.conversation.state == .closed {
                self.state = .closing(.clientQuit)
                actions.append(.close(.client))
                break
            }
            actions.append(.log(.warning, "the upstream \(self.settings.upstream) closed the connection"))
            self.recordUpstreamVanished(now: now, into: &actions)
            self.upstreamVanished(&relaying, now: now, into: &actions)
            self.state = .closing(.upstreamClosed)
        case .tunnel:
            actions.append(.close(.client))
            self.state = .closing(.insideTLS)
        case .awaitingQuitReply:
            self.state = .closing(.clientQuit)
        case .handshaking, .awaitingProxyHeader, .admitting, .closing, .closed, .modifying:
            break
        }
        self.finishIfDone(now: now, into: &actions)
    }

    // MARK: - Timer, writability, shutdown

    mutating func deadlineReached(now: NIODeadline, into actions: inout [Action]) {
        self.armed = nil
        switch self.state {
        case .upstreamTLS(let waiting, _) where now >= waiting.greetingDeadline:
            actions.append(.log(.warning, "TLS with the upstream \(self.settings.upstream) did not come up in time"))
            self.upstreamFailure = "timeout"
            actions.append(.close(.upstream))
            return
        case .awaitingProxyHeader(let deadline) where now >= deadline:
            let seconds = Double((self.settings.proxy?.timeout ?? .zero).nanoseconds) / 1e9
            actions.append(
                .log(
                    .info,
                    "closing a connection from the balancer \(self.clientName): no PROXY header within \(seconds) s"
                )
            )
            self.closeBoth(.proxyTimeout, into: &actions)
            return
        case .handshaking(let deadline) where now >= deadline:
            let seconds = self.settings.handshakeTimeout.nanoseconds / 1_000_000_000
            actions.append(.log(.info, "closing a client that did not finish its TLS handshake in \(seconds) s"))
            actions.append(
                .record([.annotation(.client, "The client did not finish its TLS handshake within \(seconds) s.")])
            )
            self.closeBoth(.handshakeTimeout, into: &actions)
            return
        case .awaitingQuitReply(let deadline) where now >= deadline:
            actions.append(.close(.upstream))
            self.state = .closing(.clientQuit)
            return
        case .awaitingGreeting(let waiting) where now >= waiting.greetingDeadline:
            actions.append(.log(.warning, "no greeting from the upstream \(self.settings.upstream) in time"))
            self.replyAndClose(
                "upstream \(self.settings.upstream) did not greet in time",
                reason: .greetingTimeout,
                now: now,
                into: &actions
            )
            actions.append(.close(.upstream))
            return
        case .relaying(let relaying) where relaying.quitDeadline.map { now >= $0 } == true:
            self.closeBoth(.clientQuit, into: &actions)
            return
        case .relaying(let relaying) where relaying.tlsDeadline.map { now >= $0 } == true:
            let seconds = self.settings.handshakeTimeout.nanoseconds / 1_000_000_000
            actions.append(.log(.info, "closing a client that did not finish its TLS handshake in \(seconds) s"))
            self.closeBoth(.handshakeTimeout, into: &actions)
            return
        case .relaying where self.lineStarted.map { now - $0 >= self.settings.lineTimeout } == true:
            self.gatewayGivesUp(
                "a command line must end within \(self.settings.lineTimeout.nanoseconds / 1_000_000_000) seconds of its first octet",
                .lineTimeout,
                now: now,
                into: &actions
            )
            return
        case .relaying, .awaitingGreeting, .connecting:
            if let login = self.loginDeadline, now >= login {
                self.gatewayGivesUp(
                    "a login must finish within \(self.settings.loginTimeout.nanoseconds / 1_000_000_000) seconds of connecting",
                    .loginTimeout,
                    now: now,
                    into: &actions
                )
                return
            }
        case .closing, .closed:
            return
        default:
            break
        }
        let idle = now - self.lastActivity
        if idle >= self.settings.idleTimeout {
            // RFC 1939 §3: an autologout closes without UPDATE, so nothing is committed.
            let seconds = idle.nanoseconds / 1_000_000_000
            guard self.clientWritable else {
                // Not idle: the client stopped reading what it was sent, and everything waits on it.
                actions.append(
                    .log(.info, "closing a session whose client stopped reading \(seconds) s ago (nothing moved since)")
                )
                self.closeBoth(.clientStalled, into: &actions)
                return
            }
            actions.append(.log(.info, "closing an idle session after \(seconds) s"))
            self.closeBoth(.idleTimeout, into: &actions)
            return
        }
        self.rearm(now: now, into: &actions)
    }

    mutating func writabilityChanged(_ side: Side, writable: Bool, into actions: inout [Action]) {
        switch side {
        case .client:
            self.clientWritable = writable
            if writable { actions.append(.resumeReading(.upstream)) }
        case .upstream:
            self.upstreamWritable = writable
            if writable, self.mayRead(.client) { actions.append(.resumeReading(.client)) }
        }
    }

    /// Graceful shutdown ran out of time: both sides close, no QUIT goes upstream.
    mutating func shutdownRequested(now: NIODeadline, into actions: inout [Action]) {
        self.closeBoth(.shutdown, into: &actions)
        self.finishIfDone(now: now, into: &actions)
    }

    // MARK: - Client lines

    /// Decides each whole line the client sent: forward it, answer it, or wait (behind STLS).
    private mutating func readClientLines(now: NIODeadline, into actions: inout [Action]) {
        let time = self.wallClock(now)
        var events = self.borrowEvents()
        var wroteUpstream = false
        var wroteClient = false
        var answersDue = false
        var partialLine = false
        loop: while self.clientInput.readableBytes > 0 {
            let start = self.clientInput.readerIndex
            switch self.conversation.nextClientLine(from: &self.clientInput, at: time, into: &events) {
            case .needMoreData:
                partialLine = true
                break loop
            case .waitForReply:
                break loop
            case .unread where self.settings.terminatesSTLS:
                // TLS from a client on the gateway's plaintext port: the gateway holds TLS here, on its own port
                // or after STLS, so nothing goes upstream.
                self.clientInput = Self.drained
                let note = "The client began a TLS handshake on a plaintext port: it should use STLS or the TLS port."
                events.append(.annotation(.gateway, note))
                actions.append(.log(.info, "closing a client that spoke TLS on a plaintext port"))
                actions.append(.record(events))
                events = []
                self.closeBoth(.tlsOnPlaintextPort, into: &actions)
                break loop
            case .unread:
                // TLS from a client on a plaintext port: passed on as it is, counted.
                let rest = self.clientInput.readSlice(length: self.clientInput.readableBytes)!
                self.conversation.clientSent(rest, at: time, into: &events)
                if self.settings.export { actions.append(.export(.fromClient(rest))) }
                wroteUpstream = self.sendUpstream(rest, into: &actions) || wroteUpstream
            case .line(let line):
                let wire = self.clientInput.readSlice(since: start)
                switch line.kind {
                case .command(let parsed, let refusal):
                    if self.settings.export {
                        actions.append(.export(.clientLine(line.content, line.ending, saslResponse: false)))
                    }
                    if let refusal = refusal ?? self.gatewayRefusal(parsed.command) {
                        self.expect(.local(Self.reply(.err(refusal))))
                        answersDue = true
                    } else if let ruled = self.ruleRefusal(parsed, events: &events, into: &actions) {
                        self.expect(.local(Self.reply(ruled)))
                        answersDue = true
                    } else if case .stls? = parsed.command, self.settings.terminatesSTLS {
                        // The gateway ends TLS itself; the upstream never sees STLS.
                        self.expect(.startTLS(Self.reply(.ok("Begin TLS negotiation"))))
                        answersDue = true
                    } else {
                        wroteUpstream = self.sendUpstream(wire, into: &actions) || wroteUpstream
                        self.expect(.upstream)
                        self.loginSent(parsed.command)
                        if case .quit? = parsed.command { self.quitForwarded = true }
                    }
                case .saslResponse:
                    if self.settings.export {
                        actions.append(.export(.clientLine(line.content, line.ending, saslResponse: true)))
                    }
                    let cancel = line.content.readableBytesView.elementsEqual([UInt8(ascii: "*")])
                    if !cancel, let refused = self.saslRefusal(events: &events, into: &actions) {
                        // The identity named in the exchange may not log in: the exchange is cancelled, so the
                        // credentials that follow never reach the upstream, and the client gets the reason.
                        self.authReplyInstead = Self.reply(refused)
                        self.login.saslCredentials = false
                        wroteUpstream = self.sendUpstream(ByteBuffer(string: "*\r\n"), into: &actions) || wroteUpstream
                    } else {
                        self.login.saslCredentials = !cancel
                        if let identity = self.conversation.saslIdentity { self.login.user = identity }
                        wroteUpstream = self.sendUpstream(wire, into: &actions) || wroteUpstream
                    }
                case .tooLong(let octets, let limit, let inSASL):
                    if self.settings.export {
                        actions.append(
                            .export(.clientOverlongLine(prefix: line.content, octets: octets, saslResponse: inSASL))
                        )
                    }
                    if inSASL {
                        // It cannot be passed on whole: the exchange is cancelled, and the upstream's -ERR to the
                        // AUTH is the client's answer.
                        self.conversation.gatewayCancelledSASL()
                        wroteUpstream = self.sendUpstream(ByteBuffer(string: "*\r\n"), into: &actions) || wroteUpstream
                    } else {
                        let reason = "line of \(octets) octets is too long; the limit is \(limit) (RFC 2449 section 4)"
                        self.expect(.local(Self.reply(.err(reason))))
                        answersDue = true
                    }
                }
                if self.conversation.state == .notPOP3 {
                    answersDue = self.stopFollowingUpstream(now: now, events: &events, into: &actions) || answersDue
                }
                if answersDue {
                    answersDue = false
                    wroteClient = self.writeLocalReplies(now: now, events: &events, into: &actions) || wroteClient
                }
            }
        }
        if self.clientInput.readableBytes == 0 { self.clientInput = Self.drained }
        // A line begun and not ended (lines waiting behind STLS or for the upstream are not this).
        if partialLine && self.clientInput.readableBytes > 0 || self.conversation.clientLineOpen {
            if self.lineStarted == nil {
                self.lineStarted = now
                self.rearm(now: now, into: &actions)
            }
        } else {
            self.lineStarted = nil
        }
        self.record(&events, into: &actions)
        if wroteUpstream { actions.append(.flush(.upstream)) }
        if wroteClient { actions.append(.flush(.client)) }
        if self.mayRead(.client) { actions.append(.resumeReading(.client)) }
        self.closeIfClientDone(now: now, into: &actions)
    }

    /// The lent events array (``lendEvents(_:)``), or a new one with room when none is lent.
    private mutating func borrowEvents() -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        swap(&events, &self.spareEvents)
        if events.capacity == 0 { events.reserveCapacity(8) }
        return events
    }

    /// Hands a read's events on to whoever reads them; when nobody does, the array's room is kept for the
    /// next read.
    private mutating func record(_ events: inout [ConversationEvent], into actions: inout [Action]) {
        if self.settings.recording, !events.isEmpty {
            actions.append(.record(events))
            return
        }
        events.removeAll(keepingCapacity: true)
        swap(&events, &self.spareEvents)
    }

    /// The executor lends an empty events array with room before an event and takes it back after, by the
    /// same call: the machine's events are the same either way, only their allocations are fewer.
    mutating func lendEvents(_ spare: inout [ConversationEvent]) {
        swap(&spare, &self.spareEvents)
    }

    /// Writes a line upstream. Returns true, for the flush that follows.
    private mutating func sendUpstream(_ bytes: ByteBuffer, into actions: inout [Action]) -> Bool {
        actions.append(.write(.upstream, bytes))
        return true
    }

    /// Not POP3 (R49): the upstream's replies are not followed any more, so the gateway's own replies do not wait
    /// for them. Returns whether there are replies of the gateway's to write.
    private mutating func stopFollowingUpstream(
        now: NIODeadline,
        events: inout [ConversationEvent],
        into actions: inout [Action]
    ) -> Bool {
        guard case .relaying(var relaying) = self.state, relaying.answers.owesUpstream else { return false }
        self.state = .modifying
        relaying.answers.dropUpstream()
        self.state = .relaying(relaying)
        return true
    }

    /// Whether the gateway's +OK to STLS is out and the handshake has not ended.
    var startingTLS: Bool {
        if case .relaying(let relaying) = self.state { return relaying.tlsDeadline != nil }
        return false
    }

    /// A line the gateway refuses for a policy of its own, with the reason; nil to let it go on.
    private func gatewayRefusal(_ command: Command?) -> String? {
        guard let command else { return nil }
        switch command {
        case .user, .pass, .apop, .auth:
            guard self.settings.requireTLS, !self.clientEncrypted else { return nil }
            return "TLS is required here: send STLS first, or connect to the POP3S port (995)"
        case .stls:
            if self.settings.upstreamSTLS, !self.settings.terminatesSTLS, !self.settings.clientTLS {
                return "STLS is not offered here"
            }
            guard self.clientEncrypted, self.settings.terminatesSTLS || self.settings.clientTLS else { return nil }
            return "TLS is already active"
        default:
            return nil
        }
    }

    // MARK: - Rules

    /// A command the rules refuse (TLS required before it, a denied command or user, a blocked login): the
    /// gateway's reply, with the event, the log line and the count; nil to let it go on.
    private mutating func ruleRefusal(
        _ parsed: ParsedCommand,
        events: inout [ConversationEvent],
        into actions: inout [Action]
    ) -> Reply? {
        guard let rules = self.rules?.rules, let gate = self.settings.rules else { return nil }
        let verb = parsed.keyword
        func refuse(_ event: RulesGate.Event, _ reply: Reply, _ why: String, _ rule: Rules.Source?) -> Reply {
            gate.count(event)
            let at = rule.map { " (\($0))" } ?? ""
            actions.append(.log(.info, "refused \(verb) client=\(self.clientName): \(why)\(at)"))
            let by = rule.map { " by the rule at \($0)" } ?? ""
            events.append(.annotation(.gateway, "The gateway refused \(verb)\(by): \(why)."))
            return reply
        }
        if !rules.tlsBefore.isEmpty, !self.clientEncrypted, rules.tlsBefore.contains(verb) {
            let reason = "TLS is required before \(verb) here: send STLS first, or use the TLS port"
            return refuse(.tlsRequired, .err(reason), "TLS is required before it", nil)
        }
        // The name the client sent, not only the one the server accepted: with USER, PASS and DELE pipelined,
        // the +OK to USER has not come back when they are decided.
        let user: String?
        switch parsed.command {
        case .user(let name)?, .apop(let name, _)?: user = name
        case .auth?: user = self.conversation.saslIdentity
        default: user = self.login.user ?? self.conversation.user
        }
        let accepted = self.conversation.user
        if !rules.commandDenials.isEmpty,
            let source = rules.commandDenied(verb, user: user)
                ?? (accepted != nil && accepted != user ? rules.commandDenied(verb, user: accepted) : nil)
        {
            return refuse(.deniedCommand, .err("\(verb) is not allowed here"), "deny command \(verb)", source)
        }
        switch parsed.command {
        case .user?, .apop?, .auth?:
            if let user, let source = rules.userDenied(user) {
                let reply = Reply.err("logins as \(user) are not accepted here", code: .sysPerm)
                return refuse(.deniedUser, reply, "deny user (user=\(user))", source)
            }
        default:
            break
        }
        switch parsed.command {
        case .pass?, .apop?, .auth?:
            guard let (limit, seconds) = gate.blocked(self.clientAddress, user: user) else { return nil }
            return refuse(.blockedLogin, Self.blockedReply(seconds), Self.blockedWhy(limit, user: user), limit.source)
        default:
            return nil
        }
    }

    /// Inside an AUTH exchange: the identity a response named is denied, or blocked.
    private mutating func saslRefusal(events: inout [ConversationEvent], into actions: inout [Action]) -> Reply? {
        guard let rules = self.rules?.rules, let gate = self.settings.rules, let user = self.conversation.saslIdentity,
            user != self.login.user
        else { return nil }
        var reply: Reply?
        var why = ""
        var source: Rules.Source?
        if let denied = rules.userDenied(user) {
            gate.count(.deniedUser)
            reply = .err("logins as \(user) are not accepted here", code: .sysPerm)
            why = "deny user (user=\(user))"
            source = denied
        } else if let (limit, seconds) = gate.blocked(self.clientAddress, user: user) {
            reply = Self.blockedReply(seconds)
            why = Self.blockedWhy(limit, user: user)
            source = limit.source
        }
        guard let reply, let source else { return nil }
        actions.append(
            .log(.info, "refused AUTH client=\(self.clientName): \(why) (\(source)); the exchange is cancelled")
        )
        events.append(
            .annotation(
                .gateway,
                "The gateway cancelled the AUTH exchange by the rule at \(source): \(why). The upstream gets * in place of the response."
            )
        )
        return reply
    }

    /// Not `[AUTH]`, which makes clients ask for a new password, nor `[LOGIN-DELAY]`, which RFC 2449 §8.2 keeps
    /// for a login that came too soon after the last one: `[SYS/TEMP]`, try again later, and when.
    private static func blockedReply(_ seconds: Double) -> Reply {
        let minutes = max(1, Int((seconds / 60).rounded(.up)))
        return .err(
            "login refused for \(minutes) more minute\(minutes == 1 ? "" : "s") after repeated failed logins",
            code: .sysTemp
        )
    }

    private static func blockedWhy(_ limit: Rules.Limit, user: String?) -> String {
        switch limit.key {
        case .user: "blocked after repeated failed logins (user=\(user ?? ""))"
        case .clientIP: "blocked after repeated failed logins from this address"
        }
    }

    /// A login command went upstream: who it names, and whether it carries credentials already.
    private mutating func loginSent(_ command: Command?) {
        switch command {
        case .user(let name)?:
            self.login.user = name
        case .apop(let name, _)?:
            self.login.user = name
        case .auth(_, let initial)?:
            self.login.user = self.conversation.saslIdentity
            self.login.saslCredentials = initial.map { $0.revealedString != "=" } ?? false
        default:
            break
        }
    }

    /// A final reply to PASS, APOP or AUTH has been read (`reply`): a failure that is the user's doing counts
    /// against the client and the user. Not a failure of the user's: a `[SYS/...]` (RFC 3206), `[IN-USE]` or
    /// `[LOGIN-DELAY]` (RFC 2449 §8.1, §8.2) reply; an AUTH that carried no credentials (an unknown mechanism, a
    /// cancel with `*`). Returns what the client gets in place of the reply, when the gateway cancelled it.
    private mutating func loginAnswered(_ reply: ReplyEvent, into actions: inout [Action]) -> ByteBuffer? {
        let replacement = reply.inResponseTo == "AUTH" ? self.authReplyInstead : nil
        if reply.inResponseTo == "AUTH" { self.authReplyInstead = nil }
        defer { self.login.saslCredentials = false }
        guard let gate = self.settings.rules, reply.side == .server, replacement == nil,
            let status = reply.reply?.status, status == .err
        else { return replacement }
        let verb = reply.inResponseTo ?? ""
        let carried = verb == "AUTH" ? self.login.saslCredentials : true
        if let code = reply.reply?.code?.levels.first?.uppercased(), ["SYS", "IN-USE", "LOGIN-DELAY"].contains(code) {
            return nil
        }
        guard carried else { return nil }
        let user = self.login.user
        // One form, every time: what fail2ban's failregex matches (client=<HOST>).
        actions.append(.log(.notice, "auth-failure client=\(self.clientName) user=\(user ?? "-") command=\(verb)"))
        if let limit = gate.authFailed(self.clientAddress, user: user) {
            let block = limit.block.map { Int($0 / 60) } ?? 0
            let who = limit.key == .user ? "user=\(user ?? "-")" : "client=\(self.clientName)"
            actions.append(
                .log(
                    .notice,
                    "blocking \(who) for \(block) minute(s) after \(limit.count) failed logins (\(limit.source))"
                )
            )
            actions.append(
                .record([
                    .annotation(
                        .gateway,
                        "That was failure \(limit.count) within the limit at \(limit.source): logins \(limit.key == .user ? "as \(user ?? "")" : "from this address") are refused for \(block) minute(s)."
                    )
                ])
            )
        }
        return nil
    }

    /// The +OK to STLS is written: the executor puts TLS in place before anything else is read.
    private mutating func beginClientTLS(now: NIODeadline, into actions: inout [Action]) {
        guard case .relaying(var relaying) = self.state else { return }
        self.state = .modifying
        relaying.tlsDeadline = now + self.settings.handshakeTimeout
        self.state = .relaying(relaying)
        actions.append(.flush(.client))
        actions.append(.startTLS)
        self.rearm(now: now, into: &actions)
    }

    private mutating func expect(_ slot: AnswerQueue.Slot) {
        // Replies of an upstream that is not POP3 are not followed: there is nothing to wait for.
        if slot == .upstream, self.conversation.state == .notPOP3 { return }
        guard case .relaying(var relaying) = self.state else { return }
        self.state = .modifying
        relaying.answers.append(slot)
        self.state = .relaying(relaying)
    }

    /// Writes the gateway's replies that have reached the head of the queue. Returns whether any was written.
    private mutating func writeLocalReplies(
        now: NIODeadline,
        events: inout [ConversationEvent],
        into actions: inout [Action]
    ) -> Bool {
        guard case .relaying(var relaying) = self.state else { return false }
        self.state = .modifying
        let replies = relaying.answers.takeLocalReplies()
        self.state = .relaying(relaying)
        for reply in replies {
            if reply.startsTLS {
                // What followed STLS is shown to the conversation, which reports it (R31), then dropped.
                if self.clientInput.readableBytes > 0 {
                    _ = self.conversation.nextClientLine(
                        from: &self.clientInput,
                        at: self.wallClock(now),
                        into: &events
                    )
                }
                self.sendOwnReply(reply.bytes, now: now, events: &events, into: &actions)
                self.clientInput = Self.drained
                self.lineStarted = nil
                self.beginClientTLS(now: now, into: &actions)
            } else {
                self.sendOwnReply(reply.bytes, now: now, events: &events, into: &actions)
            }
        }
        return !replies.isEmpty
    }

    private static func reply(_ reply: Reply) -> ByteBuffer {
        var bytes = ByteBuffer()
        bytes.writeReply(reply)
        return bytes
    }

    private mutating func sendOwnReply(
        _ reply: Reply,
        now: NIODeadline,
        events: inout [ConversationEvent],
        into actions: inout [Action]
    ) {
        self.sendOwnReply(Self.reply(reply), now: now, events: &events, into: &actions)
    }

    private mutating func sendOwnReply(
        _ bytes: ByteBuffer,
        now: NIODeadline,
        events: inout [ConversationEvent],
        into actions: inout [Action]
    ) {
        self.conversation.gatewaySent(bytes, at: self.wallClock(now), into: &events)
        guard self.clientOpen else { return }
        if self.settings.export { actions.append(.export(.toClient(bytes, saslExchange: false))) }
        actions.append(.write(.client, bytes))
    }

    /// A client that has shut down its side: once it is owed nothing more, both sides close (no QUIT); after its
    /// QUIT, the upstream has the quit-reply time to answer.
    private mutating func closeIfClientDone(now: NIODeadline, into actions: inout [Action]) {
        guard self.clientInputClosed else { return }
        switch self.state {
        case .relaying(var relaying) where self.quitForwarded:
            guard relaying.quitDeadline == nil else { return }
            self.state = .modifying
            relaying.quitDeadline = now + self.settings.quitReplyTimeout
            self.state = .relaying(relaying)
            self.rearm(now: now, into: &actions)
        case .relaying(let relaying) where relaying.answers.isEmpty:
            self.closeBoth(.clientVanished, into: &actions)
        case .connecting, .awaitingGreeting:
            // Whole lines wait for the greeting; with none, there is nothing to wait for.
            if self.clientInput.readableBytesView.firstIndex(of: 0x0A) == nil {
                self.closeBoth(.clientVanished, into: &actions)
            }
        default:
            break
        }
    }

    // MARK: - Upstream units

    /// Reads the upstream's bytes a unit at a time and writes to the client what has been read, in order with
    /// the gateway's own replies. Contiguous units go as one slice.
    private mutating func readUpstreamUnits(now: NIODeadline, into actions: inout [Action]) {
        let time = self.wallClock(now)
        var events = self.borrowEvents()
        var forwardFrom = self.upstreamInput.readerIndex
        var saslExchange = self.conversation.exportMasksServer
        // Client lines can be read after this: the greeting came, or a reply let lines behind STLS go on.
        var clientLinesMayGoOn = false
        func forward(_ machine: inout RelayMachine, _ actions: inout [Action]) {
            let end = machine.upstreamInput.readerIndex
            guard end > forwardFrom, machine.clientOpen else {
                forwardFrom = end
                return
            }
            let slice = machine.upstreamInput.readSlice(since: forwardFrom)
            if machine.settings.export { actions.append(.export(.toClient(slice, saslExchange: saslExchange))) }
            actions.append(.write(.client, slice))
            forwardFrom = end
        }
        loop: while self.upstreamInput.readableBytes > 0 {
            if self.settings.export, self.conversation.exportMasksServer != saslExchange {
                forward(&self, &actions)
                saslExchange = self.conversation.exportMasksServer
            }
            let unitStart = self.upstreamInput.readerIndex
            let eventsBefore = events.count
            let step = self.conversation.nextServerUnit(from: &self.upstreamInput, at: time, into: &events)
            if self.editsCAPA, step == .read || step == .replyEnded {
                self.editCAPA(
                    unit: unitStart,
                    since: eventsBefore,
                    events: &events,
                    forwardFrom: &forwardFrom,
                    into: &actions
                )
            }
            switch step {
            case .needMoreData:
                break loop
            case .read:
                continue
            case .greeted:
                forward(&self, &actions)
                self.greeted(now: now, into: &actions)
                clientLinesMayGoOn = true
                // What follows is the answer to the gateway's STLS.
                if case .upstreamTLS = self.state { break loop }
            case .replyEnded:
                if self.rules != nil, let reply = Self.loginReply(events[eventsBefore...]),
                    let replacement = self.loginAnswered(reply, into: &actions)
                {
                    // The upstream's answer to the gateway's cancel is not the client's: the reason is.
                    if unitStart > forwardFrom, self.clientOpen {
                        var before = self.upstreamInput
                        before.moveReaderIndex(to: forwardFrom)
                        if let slice = before.readSlice(length: unitStart - forwardFrom) {
                            actions.append(.write(.client, slice))
                        }
                    }
                    forwardFrom = self.upstreamInput.readerIndex
                    events.append(
                        .annotation(.gateway, "The client is told: \(String(buffer: replacement).dropLast(2))")
                    )
                    if self.clientOpen {
                        if self.settings.export {
                            actions.append(.export(.toClient(replacement, saslExchange: false)))
                        }
                        actions.append(.write(.client, replacement))
                    }
                }
                guard case .relaying(var relaying) = self.state else { continue }
                self.state = .modifying
                relaying.answers.upstreamAnswered()
                self.state = .relaying(relaying)
                if self.conversation.state == .transaction { self.loginDeadline = nil }
                if self.conversation.state == .tlsNegotiation {
                    // Invariant 7: plaintext that followed STLS is dropped; the machine has reported it (R31).
                    forward(&self, &actions)
                    self.clientInput = Self.drained
                    self.state = .tunnel
                    // The login happens inside TLS, out of sight; the TLS end's own limits apply.
                    self.loginDeadline = nil
                    self.lineStarted = nil
                    continue
                }
                if relaying.answers.localReplyDue {
                    forward(&self, &actions)
                    _ = self.writeLocalReplies(now: now, events: &events, into: &actions)
                }
                // Lines behind an STLS that was refused can go on now.
                clientLinesMayGoOn = true
            }
            if self.conversation.state == .notPOP3,
                self.stopFollowingUpstream(now: now, events: &events, into: &actions)
            {
                forward(&self, &actions)
                _ = self.writeLocalReplies(now: now, events: &events, into: &actions)
            }
        }
        forward(&self, &actions)
        if self.upstreamInput.readableBytes == 0 { self.upstreamInput = Self.drained }
        self.record(&events, into: &actions)
        if clientLinesMayGoOn {
            if case .relaying = self.state, self.clientInput.readableBytes > 0 {
                self.readClientLines(now: now, into: &actions)
            } else {
                self.closeIfClientDone(now: now, into: &actions)
            }
        }
    }

    /// The final reply to a login command among `events`, if one ended there.
    private static func loginReply(_ events: ArraySlice<ConversationEvent>) -> ReplyEvent? {
        for event in events.reversed() {
            guard case .reply(let reply) = event else { continue }
            guard let verb = reply.inResponseTo, verb == "PASS" || verb == "APOP" || verb == "AUTH",
                reply.reply?.status != .continuation
            else { return nil }
            return reply
        }
        return nil
    }

    // MARK: - CAPA, as the gateway offers it

    /// Whether this listener's gateway holds TLS for its clients, so that CAPA must say what the gateway offers.
    private var editsCAPA: Bool {
        self.settings.terminatesSTLS || self.settings.clientTLS || self.settings.upstreamSTLS
    }

    /// Whether the client may still be offered STLS.
    private var offersSTLS: Bool { self.settings.terminatesSTLS && !self.clientEncrypted && !self.startingTLS }

    /// Edits the upstream's CAPA reply on its way, a line at a time: STLS is offered exactly when the gateway
    /// offers it; channel-binding (`-PLUS`) SASL mechanisms, which cannot pass a TLS end, are taken out; before TLS
    /// where TLS is required, USER and SASL are withheld. Everything else goes as the upstream said it. An upstream
    /// that refuses CAPA gets the client the gateway's own list (STLS) instead. `unit` is where this unit began.
    private mutating func editCAPA(
        unit: Int,
        since first: Int,
        events: inout [ConversationEvent],
        forwardFrom: inout Int,
        into actions: inout [Action]
    ) {
        guard case .relaying(var relaying) = self.state else { return }
        let input = self.upstreamInput
        let clientOpen = self.clientOpen
        let export = self.settings.export
        func write(_ bytes: ByteBuffer) {
            guard clientOpen, bytes.readableBytes > 0 else { return }
            if export { actions.append(.export(.toClient(bytes, saslExchange: false))) }
            actions.append(.write(.client, bytes))
        }
        /// What came before the unit goes on as it was.
        func passUpToUnit() {
            var before = input
            before.moveReaderIndex(to: forwardFrom)
            if unit > forwardFrom, let slice = before.readSlice(length: unit - forwardFrom) { write(slice) }
            forwardFrom = unit
        }
        /// The unit itself is replaced, or dropped.
        func replace(_ replacement: ByteBuffer?) {
            passUpToUnit()
            if let replacement { write(replacement) }
            forwardFrom = input.readerIndex
        }
        var notes: [ConversationEvent] = []
        for event in events[first...] {
            switch event {
            case .reply(let reply) where reply.inResponseTo == "CAPA":
                if case .ok? = reply.reply?.status, reply.multiline {
                    relaying.capa = CAPAEdit()
                } else if self.offersSTLS {
                    let own = "+OK Capability list follows\r\nSTLS\r\n.\r\n"
                    replace(ByteBuffer(string: own))
                    notes.append(.annotation(.gateway, "The upstream has no CAPA; the client got the gateway's: STLS."))
                }
            case .bodyLine(let text) where relaying.capa != nil:
                let name = text.split(separator: " ").first.map { $0.uppercased() } ?? ""
                let before = !self.clientEncrypted && self.settings.requireTLS
                if name == "STLS" {
                    if self.offersSTLS, relaying.capa?.sawSTLS == false {
                        relaying.capa?.sawSTLS = true
                    } else {
                        replace(nil)
                        notes.append(.annotation(.gateway, "STLS taken out of CAPA: the gateway holds TLS here."))
                    }
                } else if before, name == "USER" || name == "SASL" {
                    replace(nil)
                    notes.append(.annotation(.gateway, "\(name) withheld from CAPA until TLS: it is required here."))
                } else if name == "SASL" {
                    let words = text.split(separator: " ").map(String.init)
                    let kept = words.dropFirst().filter { !$0.uppercased().hasSuffix("-PLUS") }
                    if kept.count < words.count - 1 {
                        replace(
                            kept.isEmpty ? nil : ByteBuffer(string: (["SASL"] + kept).joined(separator: " ") + "\r\n")
                        )
                        notes.append(
                            .annotation(
                                .gateway,
                                "Channel-binding (-PLUS) SASL mechanisms taken out: they cannot pass the gateway's TLS."
                            )
                        )
                    }
                }
            case .bodyEnd where relaying.capa != nil:
                if self.offersSTLS, relaying.capa?.sawSTLS == false {
                    // Before the terminating dot, which goes on as the upstream sent it.
                    passUpToUnit()
                    write(ByteBuffer(string: "STLS\r\n"))
                    notes.append(.annotation(.gateway, "STLS added to CAPA: the gateway offers it here."))
                }
                relaying.capa = nil
            default:
                break
            }
        }
        self.state = .relaying(relaying)
        events += notes
    }

    /// The upstream greeted: the client's lines are read from now on, those that came early first.
    private mutating func greeted(now: NIODeadline, into actions: inout [Action]) {
        guard case .awaitingGreeting = self.state else { return }
        if self.settings.upstreamSTLS {
            // The gateway's own exchange: not the client's, so not the conversation's either.
            self.state = .upstreamTLS(
                Waiting(greetingDeadline: now + self.settings.handshakeTimeout),
                handshaking: false
            )
            actions.append(.write(.upstream, ByteBuffer(string: "STLS\r\n")))
            actions.append(.flush(.upstream))
            self.rearm(now: now, into: &actions)
            return
        }
        self.state = .relaying(Relaying())
        self.rearm(now: now, into: &actions)
    }

    /// The upstream's answer to the gateway's STLS: +OK starts TLS (what came after it in plaintext is dropped:
    /// it cannot be the server's, RFC 2595 §4); anything else ends the session, the client told why.
    private mutating func readUpstreamSTLSReply(now: NIODeadline, into actions: inout [Action]) {
        guard case .upstreamTLS(let waiting, false) = self.state,
            let newline = self.upstreamInput.readableBytesView.firstIndex(of: 0x0A)
        else { return }
        let line = String(decoding: self.upstreamInput.readableBytesView[..<newline], as: UTF8.self)
        self.upstreamInput = Self.drained
        if line.hasPrefix("+OK") {
            self.state = .upstreamTLS(waiting, handshaking: true)
            actions.append(.startUpstreamTLS)
            return
        }
        actions.append(
            .log(
                .warning,
                "the upstream \(self.settings.upstream) refused STLS: \(line.filter { $0 != "\r" && $0 != "\n" })"
            )
        )
        self.upstreamFailure = "STLS refused"
        actions.append(.close(.upstream))
    }

    /// TLS with the upstream is up: the client's lines go on, those that waited first.
    mutating func upstreamTLSEstablished(version: String, now: NIODeadline, into actions: inout [Action]) {
        guard case .upstreamTLS(_, true) = self.state else { return }
        self.state = .relaying(Relaying())
        actions.append(.record([.annotation(.gateway, "The gateway began \(version) with the upstream (STLS).")]))
        self.rearm(now: now, into: &actions)
        if self.clientInput.readableBytes > 0 {
            self.readClientLines(now: now, into: &actions)
        } else {
            self.closeIfClientDone(now: now, into: &actions)
        }
        actions.append(.resumeReading(.client))
    }

    /// The upstream went away unasked: answer what can still be answered, then close.
    private mutating func upstreamVanished(_ relaying: inout Relaying, now: NIODeadline, into actions: inout [Action]) {
        var events: [ConversationEvent] = []
        if self.conversation.midReply || self.upstreamInput.readableBytes > 0 {
            // A reply was cut short: no reply can be made up for it. What arrived of it is passed on.
            if self.upstreamInput.readableBytes > 0, self.clientOpen {
                actions.append(.write(.client, self.upstreamInput))
                self.upstreamInput = Self.drained
            }
        } else {
            for slot in relaying.answers.takeAll() {
                switch slot {
                case .local(let reply):
                    self.sendOwnReply(reply, now: now, events: &events, into: &actions)
                case .upstream, .startTLS:
                    let reason = "upstream \(self.settings.upstream) closed the connection"
                    self.sendOwnReply(.err(reason, code: .sysTemp), now: now, events: &events, into: &actions)
                }
            }
        }
        if !events.isEmpty { actions.append(.record(events)) }
        if self.clientOpen {
            actions.append(.flush(.client))
            actions.append(.close(.client))
        }
    }

    private mutating func recordUpstreamVanished(now: NIODeadline, into actions: inout [Action]) {
        // A close, not a broken reply: worth knowing (a reply it cut short is reported as truncated).
        let anomaly = Anomaly(
            .unexpectedServerData,
            .server,
            "the upstream closed the connection unasked, in \(self.conversation.state.displayName)",
            severity: .note
        )
        actions.append(.record([.anomaly(anomaly)]))
    }

    // MARK: - Closing

    /// The gateway speaks for an upstream that is not there, then closes the client.
    private mutating func replyAndClose(
        _ reason: String,
        reason end: SessionEnd,
        now: NIODeadline,
        into actions: inout [Action]
    ) {
        self.state = .closing(end)
        if self.clientOpen {
            var events: [ConversationEvent] = []
            self.sendOwnReply(.err(reason, code: .sysTemp), now: now, events: &events, into: &actions)
            actions.append(.record(events))
            actions.append(.flush(.client))
            actions.append(.close(.client))
        }
        self.finishIfDone(now: now, into: &actions)
    }

    /// The gateway ends a session on a limit of its own: `-ERR` with the reason, both sides closed, no QUIT.
    private mutating func gatewayGivesUp(
        _ reason: String,
        _ end: SessionEnd,
        now: NIODeadline,
        into actions: inout [Action]
    ) {
        actions.append(.log(.info, "closing the session: \(reason)"))
        if self.clientOpen {
            var events: [ConversationEvent] = [.annotation(.gateway, "The gateway ends the session: \(reason).")]
            self.sendOwnReply(.err(reason), now: now, events: &events, into: &actions)
            actions.append(.record(events))
        }
        self.closeBoth(end, into: &actions)
    }

    /// Closes both connections; no QUIT goes upstream.
    private mutating func closeBoth(_ reason: SessionEnd, into actions: inout [Action]) {
        switch self.state {
        case .closing, .closed: return
        default: break
        }
        self.state = .closing(reason)
        if self.upstream == .open { actions.append(.close(.upstream)) }
        if self.clientOpen { actions.append(.close(.client)) }
    }

    private mutating func finishIfDone(now: NIODeadline, into actions: inout [Action]) {
        guard !self.clientOpen, self.upstream != .open, self.upstream != .connecting else { return }
        let reason: SessionEnd
        switch self.state {
        case .closed: return
        case .closing(let end): reason = end
        default: reason = self.quitForwarded ? .clientQuit : .error
        }
        self.state = .closed(reason)
        let time = self.wallClock(now)
        // Only an upstream that closed on its own can have logged out early (R18); a close of the gateway's is not.
        let serverClosedAt = reason == .upstreamClosed ? time : nil
        // A reply cut short by the gateway's own close (its client gone, a timeout, shutdown) is its doing.
        let closer: POP3Core.Side = reason == .upstreamClosed || reason == .clientQuit ? .server : .gateway
        actions.append(
            .record(
                self.conversation.clientClosed(at: time)
                    + self.conversation.serverClosed(at: serverClosedAt, by: closer)
            )
        )
        actions.append(.ended(reason))
    }

    /// Makes sure the timer fires by the earliest deadline. A timer already due earlier is kept: it re-arms.
    private mutating func rearm(now: NIODeadline, into actions: inout [Action]) {
        var next = self.lastActivity + self.settings.idleTimeout
        switch self.state {
        case .upstreamTLS(let waiting, _):
            next = min(next, waiting.greetingDeadline)
        case .connecting(let waiting), .awaitingGreeting(let waiting):
            // While connecting, the connect timeout applies: a greeting deadline passed then is set anew on
            // connection. Arming at the first one means most sessions schedule one timer, not two.
            if waiting.greetingDeadline > now { next = min(next, waiting.greetingDeadline) }
        case .awaitingQuitReply(let deadline), .handshaking(let deadline), .awaitingProxyHeader(let deadline):
            next = min(next, deadline)
        case .relaying(let relaying):
            if let quit = relaying.quitDeadline { next = min(next, quit) }
            if let tls = relaying.tlsDeadline { next = min(next, tls) }
        case .closing, .closed:
            return
        default:
            break
        }
        if let login = self.loginDeadline { next = min(next, login) }
        if let line = self.lineStarted { next = min(next, line + self.settings.lineTimeout) }
        if let armed = self.armed, armed <= next { return }
        self.armed = next
        actions.append(.arm(next))
    }
}

extension ByteBuffer {
    /// The octets read since `index`, as a slice (no copy). `getSlice` reaches readable octets only.
    fileprivate func readSlice(since index: Int) -> ByteBuffer {
        var view = self
        let length = view.readerIndex - index
        view.moveReaderIndex(to: index)
        return view.readSlice(length: length) ?? ByteBuffer()
    }
}
