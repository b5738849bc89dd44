import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import POP3Core
import POP3NIO
import POP3Rules

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Asks a session to end now (graceful shutdown ran out of time).
struct RelayShutdownEvent: Sendable {}

/// Runs one ``RelayMachine``: hands it what the two channels and the timer report, and does what it returns.
/// It decides nothing. Everything runs on the client channel's event loop; the upstream channel shares it.
final class RelaySessionExecutor {
    struct Settings {
        var listener: Endpoint
        var upstream: Endpoint
        /// The upstream's address when its host is an IP literal: connecting to it needs no resolver and no
        /// Happy Eyeballs, which cost more than the rest of a short session's setup.
        var upstreamAddress: SocketAddress?
        var configuration: RelayConfiguration
        var admission: any AdmissionPolicy
        var sink: (any ConversationSink)?
        var pcap: PCAPExport?
        var logger: Logger
        var registry: SessionRegistry
        /// The client's connection is TLS the gateway terminates, from its first octet.
        var clientTLS = false
        /// The listener's TLS: for `clientTLS`, or for the STLS the gateway answers on a plaintext port.
        var tls: ClientTLS?
        /// Before TLS, logins are refused.
        var requireTLS = false
        /// TLS to the upstream, implicit from its first octet here.
        var upstreamTLS: UpstreamTLS?
        /// The rules, when the gateway has them.
        var rules: RulesGate?
        /// The listener is behind a balancer that sends a PROXY protocol header.
        var proxy: RelayMachine.Proxy?
        var observer: (any RelayObserver)?
        /// The listener's name, for metrics and the live page.
        var listenerName = "listener1"
        /// What a session's id starts with: the gateway's start time.
        var idPrefix = "0"
    }

    /// A listener's settings and its sessions' machine settings, made once (until a reload) and shared by
    /// every session it accepts: an idle session holds a reference, not a copy of them. Unchecked: it never
    /// changes once made, and what it refers to (sink, registry, admission, rules, writer) is made for use from
    /// every event loop.
    final class Shared: @unchecked Sendable {
        let settings: Settings
        let machine: RelayMachine.SharedSettings
        /// Someone reads the sessions' names (a transcript, a live view or the end line at info): without one,
        /// a session keeps no id, address or name strings.
        let named: Bool
        let upstreamName: String

        init(_ settings: Settings) {
            self.settings = settings
            self.named = settings.sink != nil || settings.logger.logLevel <= .info
            self.upstreamName = settings.upstream.description
            let configuration = settings.configuration
            var machine = RelayMachine.Settings(upstream: self.upstreamName)
            machine.commandLineLimit = configuration.commandLineLimit
            machine.idleTimeout = configuration.idleTimeout
            machine.greetingTimeout = configuration.greetingTimeout
            machine.lineTimeout = configuration.lineTimeout
            machine.loginTimeout = configuration.loginTimeout
            machine.quitReplyTimeout = configuration.quitReplyTimeout
            machine.annotate = settings.sink != nil
            machine.recording = self.named
            machine.export = settings.pcap != nil
            machine.clientTLS = settings.clientTLS
            machine.terminatesSTLS = settings.tls != nil && !settings.clientTLS
            machine.requireTLS = settings.requireTLS
            machine.upstreamSTLS = settings.upstreamTLS.map { !$0.implicit } ?? false
            machine.handshakeTimeout = configuration.handshakeTimeout
            machine.rules = settings.rules
            machine.proxy = settings.proxy
            self.machine = RelayMachine.SharedSettings(machine)
        }
    }

    private let shared: Shared
    private var settings: Settings { self.shared.settings }
    /// The session's number; its id is made from it when something reads it (a string of its own cost every
    /// idle session 64 octets).
    private let number: Int
    private var id: String { "\(self.settings.idPrefix)-\(self.number)" }
    private var machine: RelayMachine
    /// The machine's start on both clocks, kept here too: reading the time through a method of the machine
    /// would copy the whole machine (a retain of each of its references) on every record.
    private let startedAt: NIODeadline
    private let wallClockAtStart: Double
    /// The session's record, kept only when someone reads it (`Shared.named`): on the heap, so that a session
    /// nobody reads holds 8 octets for it, not 177.
    private let record: Record?
    private final class Record {
        var recorder: SessionRecorder
        init(_ recorder: SessionRecorder) { self.recorder = recorder }
    }
    private var pcap: SessionPCAP?
    private var client: ChannelHandlerContext?
    private var upstream: ChannelHandlerContext?
    /// The machine's next deadline, as a callback: no promise, future or closures to allocate each time it moves.
    private var timer: NIOScheduledCallback?
    // The one-octet fields after the callback, in what its last eight octets leave free.
    private var clientReadPending = false
    private var handshakeRefused = false
    private var upstreamReadPending = false
    private var executing = false
    /// For the observer: which handshakes began and ended.
    private var handshakes: (client: TLSProgress, upstream: TLSProgress) = (.none, .none)
    private enum TLSProgress { case none, begun, done }
    /// For the observer: when the upstream connection was asked for (uptime nanoseconds; 0 when not asked).
    private var connectStarted: UInt64 = 0
    /// What the rules counted this session in, handed back when it ends; on the heap, as only a gateway with
    /// rules has one (inline it made every session 24 octets larger).
    private var ticket: Ticket?
    private final class Ticket {
        let value: RulesState.Ticket
        init(_ value: RulesState.Ticket) { self.value = value }
    }
    /// Actions not yet done.
    private var actions: [RelayMachine.Action] = []
    /// This event loop's spare arrays, lent to the session for each event (taken in `clientActive`, on the loop).
    private var spare: Spare?

    /// An action queue and an events array with room, one pair per event-loop thread, lent to a session for
    /// the length of an event: most events would otherwise allocate both only to free them, and an idle session
    /// holds neither. Unchecked: only its own thread uses it, and a session runs on one loop only.
    private final class Spare: @unchecked Sendable {
        var actions: [RelayMachine.Action] = []
        var events: [ConversationEvent] = []
        private static let perThread = ThreadSpecificVariable<Spare>()

        /// The calling thread's.
        static var current: Spare {
            if let spare = Self.perThread.currentValue { return spare }
            let spare = Spare()
            spare.actions.reserveCapacity(16)
            spare.events.reserveCapacity(8)
            Self.perThread.currentValue = spare
            return spare
        }
    }

    /// `now` in seconds since 1970, as the machine counts it.
    private func wallClock(_ now: NIODeadline) -> Double {
        self.wallClockAtStart + Double((now - self.startedAt).nanoseconds) / 1e9
    }

    init(_ shared: Shared, number: Int) {
        shared.settings.registry.sessionCreated()
        self.shared = shared
        self.number = number
        let now = NIODeadline.now()
        let wallClock = Date().timeIntervalSince1970
        self.startedAt = now
        self.wallClockAtStart = wallClock
        self.machine = RelayMachine(shared: shared.machine, now: now, wallClock: wallClock)
        self.record =
            shared.named
            ? Record(
                SessionRecorder(
                    sink: shared.settings.sink,
                    info: SessionInfo(
                        id: "\(shared.settings.idPrefix)-\(number)",
                        client: nil,
                        server: shared.upstreamName
                    )
                )
            ) : nil
    }

    deinit { self.settings.registry.sessionReleased() }

    // MARK: - Events

    func clientActive(_ context: ChannelHandlerContext) {
        self.client = context
        self.spare = Spare.current
        let now = NIODeadline.now()
        if self.settings.clientTLS, self.settings.proxy == nil { self.handshakes.client = .begun }
        self.settings.registry.add(self.number, context.channel)
        // Behind a balancer, the record starts once its header has named the client.
        if self.settings.proxy == nil { self.startRecord(client: context.channel.remoteAddress, via: nil, now: now) }
        let address =
            self.settings.rules != nil || self.settings.proxy != nil ? RuleAddress(context.channel.remoteAddress) : nil
        self.run(now) { $0.clientConnected(now: $1, address: address, into: &$2) }
    }

    func upstreamAdded(_ context: ChannelHandlerContext) { self.upstream = context }

    private func startRecord(client: SocketAddress?, via: String?, now: NIODeadline) {
        self.record?.recorder.start(
            client: client.map(ConversationTapHandler.describe),
            server: nil,
            via: via,
            gateway: self.client?.channel.localAddress.map(ConversationTapHandler.describe),
            listener: self.settings.listenerName,
            time: self.wallClock(now)
        )
        self.pcap = self.settings.pcap?.start(
            id: self.id,
            client: client,
            gateway: self.client?.channel.localAddress
        )
    }

    func clientTLSEstablished(_ context: ChannelHandlerContext) {
        self.handshakeEnded(upstream: false)
        let version = RelayConfiguration.TLSFloor.name(try? context.pipeline.syncOperations.nioSSL_tlsVersion())
        self.run(.now()) { $0.clientTLSEstablished(version: version, now: $1, into: &$2) }
    }

    func upstreamTLSEstablished(_ context: ChannelHandlerContext) {
        self.handshakeEnded(upstream: true)
        let version = RelayConfiguration.TLSFloor.name(try? context.pipeline.syncOperations.nioSSL_tlsVersion())
        self.run(.now()) { $0.upstreamTLSEstablished(version: version, now: $1, into: &$2) }
    }

    private func handshakeEnded(upstream: Bool) {
        if upstream { self.handshakes.upstream = .done } else { self.handshakes.client = .done }
        self.settings.observer?.tlsHandshake(listener: self.settings.listenerName, upstream: upstream, succeeded: true)
    }

    /// Returns false when the machine refuses the handshake.
    func tlsHelloSeen(_ hello: TLSHello) -> Bool {
        self.run(nil) { machine, _, actions in machine.tlsHelloSeen(hello, into: &actions) }
        return !self.handshakeRefused
    }

    func read(_ side: RelayMachine.Side, _ bytes: ByteBuffer) {
        switch side {
        case .client: self.run(.now()) { $0.clientRead(bytes, now: $1, into: &$2) }
        case .upstream: self.run(.now()) { $0.upstreamRead(bytes, now: $1, into: &$2) }
        }
    }

    func readComplete(_ side: RelayMachine.Side) {
        switch side {
        case .client: self.run(nil) { machine, _, actions in machine.clientReadComplete(into: &actions) }
        case .upstream: self.run(nil) { machine, _, actions in machine.upstreamReadComplete(into: &actions) }
        }
    }

    func active(_ side: RelayMachine.Side) {
        guard side == .upstream else { return }
        let now = NIODeadline.now()
        if let observer = self.settings.observer, self.connectStarted > 0 {
            observer.upstreamConnected(
                listener: self.settings.listenerName,
                seconds: Double(now.uptimeNanoseconds - self.connectStarted) / 1e9
            )
        }
        self.run(now) { $0.upstreamConnected(now: $1, into: &$2) }
    }

    func inactive(_ side: RelayMachine.Side) {
        switch side {
        case .client: self.run(.now()) { $0.clientClosed(now: $1, into: &$2) }
        case .upstream: self.run(.now()) { $0.upstreamClosed(now: $1, into: &$2) }
        }
    }

    func clientInputClosed() {
        self.run(.now()) { $0.clientInputClosed(now: $1, into: &$2) }
    }

    func failed(_ side: RelayMachine.Side, _ error: any Error) {
        switch side {
        case .client:
            let reason = Self.describe(error)
            self.run(.now()) { $0.clientFailed(reason, now: $1, into: &$2) }
        case .upstream:
            let reason = Self.describe(error)
            self.run(.now()) { $0.upstreamFailed(reason, now: $1, into: &$2) }
        }
    }

    func writabilityChanged(_ side: RelayMachine.Side, writable: Bool) {
        self.run(nil) { machine, _, actions in machine.writabilityChanged(side, writable: writable, into: &actions) }
    }

    func shutdown() {
        self.run(.now()) { $0.shutdownRequested(now: $1, into: &$2) }
    }

    /// NIO asks to read a side: it may, unless the other side cannot take more (invariant 4).
    func wantsRead(_ side: RelayMachine.Side, _ context: ChannelHandlerContext) {
        if self.machine.mayRead(side) {
            context.read()
        } else if side == .client {
            self.clientReadPending = true
        } else {
            self.upstreamReadPending = true
        }
    }

    // MARK: - Executing

    /// Feeds one event to the machine and does what it returns. An action can set off another event at once
    /// (a close fires channelInactive): that event's actions join the queue and are done after these.
    private func run(
        _ now: NIODeadline?,
        _ event: (inout RelayMachine, NIODeadline, inout [RelayMachine.Action]) -> Void
    ) {
        let now = now ?? .uptimeNanoseconds(0)
        guard !self.executing else {
            event(&self.machine, now, &self.actions)
            return
        }
        // The loop's spare queue, unless a session this loop is already running an event of has it.
        let spare = self.spare
        let lent = spare.map { $0.actions.capacity > 0 } ?? false
        if lent, let spare { swap(&self.actions, &spare.actions) } else { self.actions.reserveCapacity(8) }
        if let spare { self.machine.lendEvents(&spare.events) }
        event(&self.machine, now, &self.actions)
        if let spare {
            self.machine.lendEvents(&spare.events)
            if spare.events.capacity > 256 { spare.events = [] }
        }
        self.executing = true
        var next = 0
        while next < self.actions.count {
            let action = self.actions[next]
            next += 1
            self.execute(action)
        }
        self.executing = false
        // An idle session holds no array for its next event; a lent one goes back with its room.
        if lent, let spare, spare.actions.capacity == 0, self.actions.capacity <= 64 {
            self.actions.removeAll(keepingCapacity: true)
            swap(&self.actions, &spare.actions)
        } else {
            self.actions = []
        }
    }

    private func execute(_ action: RelayMachine.Action) {
        switch action {
        case .admit:
            let client = self.client?.channel.remoteAddress
            var decision = self.settings.admission.decide(client: client, listener: self.settings.listener)
            if decision == .admit, let rules = self.settings.rules,
                let address = self.machine.clientAddress ?? RuleAddress(client)
            {
                let (verdict, ticket) = rules.admit(address)
                decision = verdict
                self.ticket = ticket.map(Ticket.init)
            }
            if let observer = self.settings.observer {
                switch decision {
                case .admit: break
                case .refuse: observer.refused(listener: self.settings.listenerName, rule: "admission")
                case .busy: observer.refused(listener: self.settings.listenerName, rule: "capacity")
                case .rule(let refusal): observer.refused(listener: self.settings.listenerName, rule: refusal.rule)
                }
            }
            self.machine.admitted(decision, now: .now(), into: &self.actions)
        case .connectUpstream:
            self.connectUpstream()
        case .write(let side, let bytes):
            self.context(side)?.write(NIOAny(bytes), promise: nil)
        case .flush(let side):
            self.context(side)?.flush()
        case .close(let side):
            // What was written goes out first: a close drops writes not yet flushed.
            self.context(side)?.flush()
            self.context(side)?.close(promise: nil)
        case .arm(let deadline):
            self.timer?.cancel()
            guard let loop = self.client?.eventLoop else { return }
            // It throws only when the loop is shutting down, which closes every session anyway.
            self.timer = try? loop.assumeIsolated().scheduleCallback(at: deadline, handler: Deadline(executor: self))
        case .resumeReading(let side):
            guard side == .client ? self.clientReadPending : self.upstreamReadPending, self.machine.mayRead(side)
            else { return }
            if side == .client { self.clientReadPending = false } else { self.upstreamReadPending = false }
            self.context(side)?.read()
        case .record(let events):
            guard let record = self.record else { return }
            record.recorder.record(events, time: self.wallClock(.now()))
            if self.settings.sink != nil { record.recorder.identified(self.machine.conversation.user) }
        case .export(let export):
            self.pcap?.export(export)
        case .log(let level, let message):
            guard self.settings.logger.logLevel <= level else { return }
            var logger = self.settings.logger
            logger[metadataKey: "session"] = "\(self.id)"
            logger.log(level: level, "\(message)")
        case .ended(let how):
            self.finish(how)
        case .startTLS:
            self.startTLS()
        case .startUpstreamTLS:
            guard let upstream = self.upstream, let tls = self.settings.upstreamTLS else { return }
            self.handshakes.upstream = .begun
            do {
                try upstream.pipeline.syncOperations.addHandler(try tls.handler(), position: .first)
            } catch {
                self.failed(.upstream, error)
            }
        case .refuseHandshake:
            // The tap that asked writes the alert and closes.
            self.handshakeRefused = true
        case .identified(let client, let via):
            // The addresses are made only for someone who reads them.
            guard self.record != nil || self.settings.pcap != nil else { return }
            let address = client.flatMap { try? SocketAddress(ipAddress: $0.address, port: $0.port) }
            self.startRecord(
                client: address ?? self.client?.channel.remoteAddress,
                via: via.map { "\($0)" },
                now: .now()
            )
        case .beginClientTLS(let leftover):
            self.startTLS(leftover: leftover)
        }
    }

    /// The timer's callback: the machine's deadline has come.
    private struct Deadline: NIOScheduledCallbackHandler {
        let executor: RelaySessionExecutor

        func handleScheduledCallback(eventLoop: some EventLoop) {
            self.executor.timer = nil
            self.executor.run(.now()) { $0.deadlineReached(now: $1, into: &$2) }
        }
    }

    /// After the gateway's +OK to STLS, or a balancer's PROXY header on a TLS port: TLS goes in front of
    /// everything on the client's connection, with the tap that reads the hellos below it. Bytes not yet read
    /// are the client's handshake from here on; `leftover`, read with the header, is its start.
    private func startTLS(leftover: ByteBuffer? = nil) {
        guard let client = self.client, let tls = self.settings.tls else { return }
        self.handshakes.client = .begun
        let pipeline = client.pipeline.syncOperations
        do {
            try pipeline.addHandler(tls.handler(), position: .first)
            try pipeline.addHandler(HelloTap { self.tlsHelloSeen($0) }, position: .first)
        } catch {
            self.failed(.client, error)
            return
        }
        if let leftover, leftover.readableBytes > 0 {
            pipeline.fireChannelRead(NIOAny(leftover))
            pipeline.fireChannelReadComplete()
        }
    }

    private func context(_ side: RelayMachine.Side) -> ChannelHandlerContext? {
        side == .client ? self.client : self.upstream
    }

    private func connectUpstream() {
        guard let loop = self.client?.eventLoop else { return }
        if self.settings.observer != nil { self.connectStarted = NIODeadline.now().uptimeNanoseconds }
        if self.settings.upstreamTLS?.implicit == true { self.handshakes.upstream = .begun }
        let bound = NIOLoopBound(self, eventLoop: loop)
        // ClientBootstrap sets TCP_NODELAY by default; the greeting and short replies must not wait for Nagle.
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(self.settings.configuration.connectTimeout)
            .channelOption(.recvAllocator, value: Self.receiveAllocator)
            .channelInitializer { [upstreamTLS = self.settings.upstreamTLS] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let upstreamTLS, upstreamTLS.implicit {
                        try channel.pipeline.syncOperations.addHandler(try upstreamTLS.handler())
                    }
                    try channel.pipeline.syncOperations.addHandler(RelayHandler(.upstream, executor: bound.value))
                }
            }
        let connected =
            if let address = self.settings.upstreamAddress {
                bootstrap.connect(to: address)
            } else {
                bootstrap.connect(host: self.settings.upstream.host, port: self.settings.upstream.port)
            }
        // Success arrives as the upstream channel's channelActive; only a failure is taken from here.
        let registry = self.settings.registry
        let logger = self.settings.logger
        connected.assumeIsolated().whenFailure { error in
            let exhausted = Self.outOfDescriptors(error)
            if exhausted { registry.descriptorsExhausted(logger: logger) }
            bound.value.run(.now()) {
                $0.upstreamConnectFailed("\(error)", outOfDescriptors: exhausted, now: $1, into: &$2)
            }
        }
    }

    /// An error as a log line can say it: BoringSSL's reason code (`UNSUPPORTED_PROTOCOL`) rather than the
    /// whole error stack with its source paths.
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if let error = error as? NIOSSLError, case .uncleanShutdown = error {
            return "the peer closed the connection without ending TLS (during the handshake, or without close_notify)"
        }
        let marker = "OPENSSL_internal:"
        guard error is NIOSSLError || error is BoringSSLError,
            let start = text.indices.first(where: { text[$0...].hasPrefix(marker) })
        else { return text }
        let code = text[text.index(start, offsetBy: marker.count)...].prefix {
            $0.isLetter || $0.isNumber || $0 == "_"
        }
        switch code {
        case "WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG":
            return "what the client sent is not TLS (\(code))"
        case "UNSUPPORTED_PROTOCOL":
            return "the client offered only TLS versions older than the gateway accepts (\(code))"
        case "CERTIFICATE_VERIFY_FAILED":
            return "the certificate is not trusted, or not for the name asked (\(code))"
        case "NO_SHARED_CIPHER":
            return "the client and the gateway share no cipher suite (\(code))"
        case let alert where alert.hasPrefix("SSLV3_ALERT_") || alert.hasPrefix("TLSV1_ALERT_"):
            // The peer's fatal alert, received in clear: its decision, not the gateway's or the server's.
            let name = alert.split(separator: "_").dropFirst(2).joined(separator: " ").lowercased()
            let why =
                alert.hasSuffix("UNKNOWN_CA") || alert.hasSuffix("BAD_CERTIFICATE")
                    || alert.hasSuffix("CERTIFICATE_UNKNOWN")
                ? ": it does not trust the certificate it was shown" : ""
            return "the peer ended the handshake with a fatal alert, \(name)\(why) (\(code))"
        default:
            return code.isEmpty ? text : String(code)
        }
    }

    /// Each connection's reads: 128 octets at first (a command, a status line), growing to 64 KiB for bodies
    /// and shrinking back. NIO keeps the last buffer for each channel, so an idle session holds this much on each
    /// side (NIO's default starts at 2 KiB; 256 cost an idle session 0.3 KB more).
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 128, maximum: 65_536)

    /// Whether `error` says this process has no descriptor left (EMFILE) or the system none (ENFILE).
    static func outOfDescriptors(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        return error.errnoCode == EMFILE || error.errnoCode == ENFILE
    }

    private func finish(_ how: SessionEnd) {
        if let observer = self.settings.observer {
            // A handshake begun and never completed failed (or was cut short, which the client sees the same).
            if self.handshakes.client == .begun {
                observer.tlsHandshake(listener: self.settings.listenerName, upstream: false, succeeded: false)
            }
            if self.handshakes.upstream == .begun {
                observer.tlsHandshake(listener: self.settings.listenerName, upstream: true, succeeded: false)
            }
        }
        self.timer?.cancel()
        self.timer = nil
        self.pcap?.finish()
        if let ticket = self.ticket {
            self.settings.rules?.ended(ticket.value)
            self.ticket = nil
        }
        self.record?.recorder.end(
            time: self.wallClock(.now()),
            clientOctets: self.machine.clientOctets,
            serverOctets: self.machine.upstreamOctets,
            commands: self.machine.conversation.commandCount,
            finalState: self.machine.conversation.state,
            ending: how.rawValue,
            logger: self.settings.logger
        )
        // The contexts hold the handlers, which hold this executor: let go of them, or no session is ever freed.
        self.client = nil
        self.upstream = nil
        // Last: shutdown waits for the registry to empty and then exits, so whatever comes after this may be lost.
        self.settings.registry.remove(self.number)
    }
}

@available(*, unavailable)
extension RelaySessionExecutor: Sendable {}

// MARK: - Handlers

/// One end of the relay: the client connection's, or the upstream connection's. It hands everything to the
/// executor and asks it before each read.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let side: RelayMachine.Side
    let executor: RelaySessionExecutor

    init(_ side: RelayMachine.Side, executor: RelaySessionExecutor) {
        self.side = side
        self.executor = executor
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if self.side == .upstream { self.executor.upstreamAdded(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        switch self.side {
        case .client: self.executor.clientActive(context)
        case .upstream: self.executor.active(.upstream)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.executor.read(self.side, Self.unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.executor.readComplete(self.side)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.executor.inactive(self.side)
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.executor.writabilityChanged(self.side, writable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        self.executor.wantsRead(self.side, context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RelayShutdownEvent {
            self.executor.shutdown()
        } else if case .inputClosed? = event as? ChannelEvent, self.side == .client {
            self.executor.clientInputClosed()
        } else if case .handshakeCompleted? = event as? TLSUserEvent {
            if self.side == .client {
                self.executor.clientTLSEstablished(context)
            } else {
                self.executor.upstreamTLSEstablished(context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.executor.failed(self.side, error)
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
