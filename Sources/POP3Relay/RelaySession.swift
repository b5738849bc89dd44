import Logging
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How a session ended, for its log line and its transcript.
public enum SessionEnd: String, Sendable {
    case clientQuit = "the client quit"
    case clientVanished = "the client closed without QUIT"
    case upstreamClosed = "the upstream closed the connection"
    case upstreamUnreachable = "the upstream was unreachable"
    case greetingTimeout = "the upstream sent no greeting in time"
    case idleTimeout = "idle timeout"
    case shutdown = "the gateway shut down"
    case error = "a connection error"
}

/// Asks a session to end now (graceful shutdown ran out of time).
struct RelayShutdownEvent: Sendable {}

/// One client connection and its upstream connection, glued together.
///
/// Bytes pass unchanged both ways (invariant 1) and both directions go through the conversation machine.
/// Client lines are forwarded one by one so the gateway can refuse an over-long or malformed line with its
/// own `-ERR`; such a reply waits until every earlier command is answered, so replies keep the order of the
/// commands (invariant 2). The gateway never sends QUIT upstream for a client that did not (invariant 3).
/// Reads stop on one side while the other cannot take more (invariant 4). Everything runs on the client
/// channel's event loop; the upstream channel shares it.
final class RelaySession {
    enum Phase {
        case connecting
        case greeting
        case relaying
        /// After an accepted STLS: bytes are relayed without being read.
        case opaque
        case closed
    }

    /// Something the client's next lines must wait for.
    enum Barrier {
        /// The gateway's own reply, to be sent once every earlier command is answered.
        case localReply(ByteBuffer)
        /// STLS was forwarded: what follows depends on its reply (RFC 2595 §4, invariant 7).
        case stls
    }

    struct Settings {
        var id: String
        var upstream: Endpoint
        /// The upstream's address when its host is an IP literal: connecting to it needs no resolver and no
        /// Happy Eyeballs, which cost more than the rest of a short session's setup.
        var upstreamAddress: SocketAddress?
        var configuration: RelayConfiguration
        var sink: (any ConversationSink)?
        var pcap: PCAPExport?
        var logger: Logger
        var registry: SessionRegistry
    }

    static let maximumBufferedClientOctets = 64 * 1024

    let settings: Settings
    private(set) var machine: ConversationMachine
    private var framer: LineFramer
    private var clientInput = ByteBuffer()
    private(set) var phase: Phase = .connecting
    private var barrier: Barrier?
    /// Commands let through or answered by the gateway, counted like the machine counts completed replies.
    private var processedCommands = 0
    private var lastForwardedOpensSASL = false
    private var quitForwarded = false
    private var endReason: SessionEnd?

    private var clientContext: ChannelHandlerContext?
    private var upstreamContext: ChannelHandlerContext?
    private var pcap: SessionPCAP?
    private var clientOpen = false
    private var upstreamOpen = false
    private var finished = false
    var pendingClientRead = false
    var pendingUpstreamRead = false

    private var info: SessionInfo
    private var clientOctets = 0
    private var upstreamOctets = 0
    /// The last byte from either side; the idle timeout counts from here.
    private var lastActivity = NIODeadline.now()
    /// One timer per session, at its earliest deadline (idleness, the greeting, the answer to QUIT): most
    /// sessions end before it fires, so each costs one scheduled task instead of one per deadline.
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var greetingDeadline: NIODeadline?
    private var quitDeadline: NIODeadline?

    init(_ settings: Settings) {
        settings.registry.sessionCreated()
        self.settings = settings
        var machine = ConversationMachine.Configuration()
        machine.annotate = settings.sink != nil
        self.machine = ConversationMachine(configuration: machine)
        self.framer = LineFramer(limit: settings.configuration.commandLineLimit)
        self.info = SessionInfo(id: settings.id, client: nil, server: settings.upstream.description)
    }

    deinit { self.settings.registry.sessionReleased() }

    static func now() -> Double { Date().timeIntervalSince1970 }

    private var logger: Logger {
        var logger = self.settings.logger
        logger[metadataKey: "session"] = "\(self.settings.id)"
        return logger
    }

    // MARK: - Client side

    func clientActive(_ context: ChannelHandlerContext) {
        self.clientContext = context
        self.clientOpen = true
        self.info.client = context.channel.remoteAddress.map(ConversationTapHandler.describe)
        self.settings.registry.add(self.settings.id, context.channel)
        self.settings.sink?.sessionStarted(self.info, time: Self.now())
        self.pcap = self.settings.pcap?.start(
            id: self.settings.id,
            client: context.channel.remoteAddress,
            gateway: context.channel.localAddress
        )
        // The greeting cannot be due before this (its timeout counts from the connection).
        self.greetingDeadline = .now() + self.settings.configuration.greetingTimeout
        self.armTimer()
        self.connectUpstream(context.eventLoop)
    }

    func clientRead(_ bytes: ByteBuffer) {
        self.clientOctets += bytes.readableBytes
        self.lastActivity = .now()
        var events: [ConversationEvent] = []
        self.machine.clientSent(bytes, at: Self.now(), into: &events)
        self.deliver(events)
        switch self.phase {
        case .opaque:
            self.pcap?.fromClient(bytes)
            self.upstreamContext?.write(NIOAny(bytes), promise: nil)
        case .closed:
            break
        case .connecting, .greeting, .relaying:
            if self.clientInput.readableBytes == 0 {
                self.clientInput = bytes  // no copy: lines are forwarded as slices of what was read
            } else {
                var bytes = bytes
                self.clientInput.writeBuffer(&bytes)
            }
            self.processClientInput()
        }
    }

    func clientReadComplete() {
        self.upstreamContext?.flush()
    }

    func clientInactive() {
        self.clientOpen = false
        if self.endReason == nil {
            self.endReason = self.quitForwarded ? .clientQuit : .clientVanished
        }
        if self.upstreamOpen, let upstream = self.upstreamContext {
            if self.quitForwarded && self.machine.state != .closed {
                // The client asked for QUIT: let the upstream answer it (and commit), but not forever.
                self.quitDeadline = .now() + .seconds(5)
                self.armTimer()
            } else {
                // Invariant 3: closing without QUIT leaves every DELE mark uncommitted.
                upstream.close(promise: nil)
            }
        }
        self.finishIfDone()
    }

    /// An I/O error on the client's connection (a reset, a broken pipe): the client is gone.
    func clientFailed(_ error: any Error) {
        self.logger.debug("client connection error: \(error)")
        self.closeBoth(reason: self.quitForwarded ? .clientQuit : .clientVanished)
    }

    /// Whether the client may be read from now.
    var clientReadable: Bool {
        guard self.clientInput.readableBytes < Self.maximumBufferedClientOctets else { return false }
        guard let upstream = self.upstreamContext else { return self.phase == .connecting || self.phase == .greeting }
        return upstream.channel.isWritable
    }

    var upstreamReadable: Bool {
        self.clientContext?.channel.isWritable ?? false
    }

    func clientWritabilityChanged() {
        if self.upstreamReadable, self.pendingUpstreamRead {
            self.pendingUpstreamRead = false
            self.upstreamContext?.read()
        }
    }

    func upstreamWritabilityChanged() {
        if self.clientReadable, self.pendingClientRead {
            self.pendingClientRead = false
            self.clientContext?.read()
        }
    }

    // MARK: - Client lines

    /// Relays the client's complete lines, refusing over-long and malformed ones, and stops at a barrier.
    private func processClientInput() {
        var forwarded = false
        while self.phase == .relaying, self.barrier == nil {
            let saslOpen = self.saslOpen
            self.framer.limit =
                saslOpen ? POP3Defaults.saslLineLimit : self.settings.configuration.commandLineLimit
            let start = self.clientInput.readerIndex
            guard let frame = self.framer.next(from: &self.clientInput) else { break }
            let consumed = self.clientInput.readerIndex - start
            switch frame {
            case .tooLong(let prefix, let octets):
                self.pcap?.clientOverlongLine(prefix: prefix, octets: octets)
                self.processedCommands += 1
                self.refuse(
                    "line of \(octets) octets is too long; the limit is \(self.framer.limit) (RFC 2449 section 4)"
                )
            case .line(let content, let ending):
                self.pcap?.clientLine(content, ending, saslResponse: saslOpen)
                if saslOpen {
                    self.forward(content, ending, start: start, consumed: consumed)
                    forwarded = true
                    continue
                }
                self.processedCommands += 1
                if let problem = Self.malformation(content) {
                    self.refuse(problem)
                    continue
                }
                let keyword = Self.keyword(content)
                self.lastForwardedOpensSASL = keyword == "AUTH" && content.readableBytesView.contains(0x20)
                self.forward(content, ending, start: start, consumed: consumed)
                forwarded = true
                if keyword == "STLS" { self.barrier = .stls }
                if keyword == "QUIT" { self.quitForwarded = true }
            }
        }
        if forwarded { self.upstreamContext?.flush() }
        if self.pendingClientRead, self.clientReadable {
            self.pendingClientRead = false
            self.clientContext?.read()
        }
    }

    /// An AUTH exchange the gateway let through has not had its final reply: client lines are SASL responses.
    private var saslOpen: Bool {
        self.lastForwardedOpensSASL && self.machine.completedReplies < self.processedCommands
    }

    /// Sends a line upstream as the client sent it. `consumed` octets from `start` in the client input are the
    /// line with its ending when the line came in one piece: then that slice goes, with no copy.
    private func forward(_ content: ByteBuffer, _ ending: LineFramer.Ending, start: Int, consumed: Int) {
        guard let upstream = self.upstreamContext else { return }
        let endingLength = ending == .crlf ? 2 : 1
        if consumed == content.readableBytes + endingLength,
            let whole = self.clientInput.getSlice(at: start, length: consumed)
        {
            upstream.write(NIOAny(whole), promise: nil)
            return
        }
        // The framer joined pieces of the line: put its ending back.
        var line = content
        line.writeStaticString(ending == .crlf ? "\r\n" : "\n")
        upstream.write(NIOAny(line), promise: nil)
    }

    /// Why a client line is not forwarded, if it is not: control characters, or no 3–4 character keyword.
    static func malformation(_ content: ByteBuffer) -> String? {
        let bytes = content.readableBytesView
        if bytes.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7F }) {
            return "control characters are not allowed in a command (RFC 1939 section 3)"
        }
        let keywordLength = bytes.firstIndex(of: 0x20).map { $0 - bytes.startIndex } ?? bytes.count
        if keywordLength < 3 || keywordLength > 4 {
            return "a command starts with a keyword of 3 or 4 characters (RFC 2449 section 3)"
        }
        return nil
    }

    static func keyword(_ content: ByteBuffer) -> String {
        let bytes = content.readableBytesView
        let end = bytes.firstIndex(of: 0x20) ?? bytes.endIndex
        return String(decoding: bytes[bytes.startIndex..<end], as: UTF8.self).uppercased()
    }

    /// The gateway answers this line itself, in its turn.
    private func refuse(_ reason: String) {
        var reply = ByteBuffer()
        reply.writeReply(.err(reason))
        self.barrier = .localReply(reply)
        self.releaseBarrier()
    }

    /// Lets the client's lines go on once what they wait for has happened.
    private func releaseBarrier() {
        guard let barrier = self.barrier else { return }
        switch barrier {
        case .localReply(let reply):
            guard self.machine.completedReplies >= self.processedCommands - 1 else { return }
            self.barrier = nil
            self.sendOwnReply(reply)
            self.clientContext?.flush()
            self.processClientInput()
        case .stls:
            guard self.machine.completedReplies >= self.processedCommands else { return }
            self.barrier = nil
            if self.machine.state == .tlsNegotiation {
                // Invariant 7: plaintext that followed STLS is dropped; the machine has reported it (R31).
                self.clientInput.clear()
                self.framer.reset()
                self.phase = .opaque
            } else {
                self.processClientInput()
            }
        }
    }

    private func sendOwnReply(_ reply: ByteBuffer) {
        var events: [ConversationEvent] = []
        self.machine.gatewaySent(reply, at: Self.now(), into: &events)
        self.deliver(events)
        self.pcap?.toClient(reply)
        self.clientContext?.write(NIOAny(reply), promise: nil)
    }

    // MARK: - Upstream side

    private func connectUpstream(_ loop: any EventLoop) {
        let endpoint = self.settings.upstream
        let bound = NIOLoopBound(self, eventLoop: loop)
        // ClientBootstrap sets TCP_NODELAY by default; the greeting and short replies must not wait for Nagle.
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(self.settings.configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RelayHandler(.upstream, session: bound.value))
                }
            }
        let connected =
            if let address = self.settings.upstreamAddress {
                bootstrap.connect(to: address)
            } else {
                bootstrap.connect(host: endpoint.host, port: endpoint.port)
            }
        connected.assumeIsolated()
            .whenComplete { result in
                let session = bound.value
                switch result {
                case .success:
                    session.upstreamConnected()
                case .failure(let error):
                    session.upstreamFailed(error)
                }
            }
    }

    func upstreamActive(_ context: ChannelHandlerContext) {
        self.upstreamContext = context
        self.upstreamOpen = true
    }

    private func upstreamConnected() {
        guard self.clientOpen else {
            self.upstreamContext?.close(promise: nil)
            return
        }
        self.phase = .greeting
        self.greetingDeadline = .now() + self.settings.configuration.greetingTimeout
        self.armTimer()
    }

    private func upstreamFailed(_ error: any Error) {
        self.logger.warning("cannot reach the upstream \(self.settings.upstream): \(error)")
        self.endReason = .upstreamUnreachable
        self.replyAndClose("upstream \(self.settings.upstream) is unreachable")
        self.finishIfDone()
    }

    /// The gateway speaks for an upstream that is not there, then closes.
    private func replyAndClose(_ reason: String) {
        guard let client = self.clientContext, self.clientOpen else { return }
        var reply = ByteBuffer()
        reply.writeReply(.err(reason, code: .sysTemp))
        self.sendOwnReply(reply)
        client.flush()
        client.close(promise: nil)
        self.phase = .closed
    }

    func upstreamRead(_ bytes: ByteBuffer) {
        self.upstreamOctets += bytes.readableBytes
        // A session waiting on a slow upstream (or receiving a long RETR) is not idle.
        self.lastActivity = .now()
        self.pcap?.toClient(bytes, saslOpen: self.phase == .relaying && self.saslOpen)
        self.clientContext?.write(NIOAny(bytes), promise: nil)
        var events: [ConversationEvent] = []
        self.machine.serverSent(bytes, at: Self.now(), into: &events)
        self.deliver(events)
        if self.phase == .greeting, self.machine.state != .greeting {
            self.phase = .relaying
            self.greetingDeadline = nil
            self.processClientInput()
        }
        self.releaseBarrier()
    }

    func upstreamReadComplete() {
        self.clientContext?.flush()
    }

    func upstreamInactive() {
        self.upstreamOpen = false
        self.quitDeadline = nil
        if self.clientOpen, self.phase != .closed {
            let normal = self.quitForwarded && self.machine.state == .closed
            if self.endReason == nil { self.endReason = normal ? .clientQuit : .upstreamClosed }
            if normal {
                self.clientContext?.flush()
                self.clientContext?.close(promise: nil)
            } else {
                self.upstreamVanished()
            }
            self.phase = .closed
        }
        self.finishIfDone()
    }

    /// The upstream went away unasked: answer what can still be answered, then close (R53 is recorded).
    private func upstreamVanished() {
        guard let client = self.clientContext else { return }
        self.logger.warning("the upstream \(self.settings.upstream) closed the connection")
        self.deliver([
            .anomaly(
                Anomaly(
                    .unexpectedServerData,
                    .server,
                    "the upstream closed the connection unasked, in \(self.machine.state.displayName)"
                )
            )
        ])
        switch self.phase {
        case .connecting, .greeting:
            self.replyAndClose("upstream \(self.settings.upstream) closed before its greeting")
            return
        case .relaying where !self.machine.midReply:
            let unanswered = max(0, self.processedCommands - self.machine.completedReplies)
            for _ in 0..<unanswered {
                var reply = ByteBuffer()
                reply.writeReply(.err("upstream \(self.settings.upstream) closed the connection", code: .sysTemp))
                self.sendOwnReply(reply)
            }
        case .relaying, .opaque, .closed:
            break
        }
        client.flush()
        client.close(promise: nil)
    }

    // MARK: - Timers and shutdown

    /// Makes sure the timer fires by the earliest deadline. A timer already due earlier is kept: it re-arms.
    private func armTimer() {
        guard !self.finished, let loop = self.clientContext?.eventLoop else { return }
        var next = self.lastActivity + self.settings.configuration.idleTimeout
        if let greeting = self.greetingDeadline { next = min(next, greeting) }
        if let quit = self.quitDeadline { next = min(next, quit) }
        if let current = self.timerDeadline, current <= next { return }
        self.timer?.cancel()
        self.timerDeadline = next
        self.timer = loop.assumeIsolated().scheduleTask(deadline: next) { self.timerFired() }
    }

    private func timerFired() {
        self.timer = nil
        self.timerDeadline = nil
        guard !self.finished else { return }
        let now = NIODeadline.now()
        if let quit = self.quitDeadline, now >= quit {
            self.quitDeadline = nil
            self.upstreamContext?.close(promise: nil)
        }
        if let greeting = self.greetingDeadline, now >= greeting {
            self.greetingDeadline = nil
            // While still connecting, the connect timeout applies; the greeting's deadline is set on connection.
            if self.phase == .greeting {
                self.logger.warning("no greeting from the upstream \(self.settings.upstream) in time")
                self.endReason = .greetingTimeout
                self.replyAndClose("upstream \(self.settings.upstream) did not greet in time")
                self.upstreamContext?.close(promise: nil)
                return
            }
        }
        let idle = now - self.lastActivity
        if idle >= self.settings.configuration.idleTimeout {
            // RFC 1939 §3: an autologout closes without UPDATE, so nothing is committed.
            self.logger.info("closing an idle session after \(idle.nanoseconds / 1_000_000_000) s")
            self.endReason = .idleTimeout
            self.closeBoth()
            return
        }
        self.armTimer()
    }

    /// Closes both connections; no QUIT goes upstream.
    func closeBoth(reason: SessionEnd? = nil) {
        if let reason, self.endReason == nil { self.endReason = reason }
        self.phase = .closed
        self.upstreamContext?.close(promise: nil)
        self.clientContext?.close(promise: nil)
        if self.upstreamContext == nil { self.finishIfDone() }
    }

    private func finishIfDone() {
        guard !self.clientOpen, !self.upstreamOpen, !self.finished else { return }
        self.finished = true
        self.phase = .closed
        self.timer?.cancel()
        self.timer = nil
        self.pcap?.finish()
        let time = Self.now()
        self.deliver(self.machine.clientClosed(at: time) + self.machine.serverClosed(at: time))
        let how = self.endReason ?? .error
        let summary = SessionSummary(
            clientOctets: self.clientOctets,
            serverOctets: self.upstreamOctets,
            commands: self.machine.commandCount,
            anomalies: self.anomalies,
            finalState: self.machine.state,
            ending: how.rawValue
        )
        self.settings.sink?.sessionEnded(self.info, time: time, summary: summary)
        // The contexts hold the handlers, which hold this session: let go of them, or no session is ever freed.
        self.clientContext = nil
        self.upstreamContext = nil
        // The session's logger is built on demand; most gateways log at info, benchmarks above it.
        if self.settings.logger.logLevel <= .info {
            self.logger.info(
                "session ended: \(how.rawValue)",
                metadata: [
                    "client": "\(self.info.client ?? "?")",
                    "upstream": "\(self.settings.upstream)",
                    "octets_from_client": "\(self.clientOctets)",
                    "octets_from_upstream": "\(self.upstreamOctets)",
                    "commands": "\(self.machine.commandCount)",
                    "anomalies": "\(self.anomalies)",
                ]
            )
        }
        // Last: shutdown waits for the registry to empty and then exits, so whatever comes after this may be lost.
        self.settings.registry.remove(self.settings.id)
    }

    private var anomalies = 0

    private func deliver(_ events: [ConversationEvent]) {
        guard !events.isEmpty else { return }
        for case .anomaly in events { self.anomalies += 1 }
        self.settings.sink?.events(events, session: self.info, time: Self.now())
    }
}

// MARK: - Handlers

/// One end of the relay: the client connection's, or the upstream connection's. It hands everything to the
/// session and holds reads back while the other end cannot take more.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum End {
        case client
        case upstream
    }

    let end: End
    let session: RelaySession

    init(_ end: End, session: RelaySession) {
        self.end = end
        self.session = session
    }

    func channelActive(context: ChannelHandlerContext) {
        switch self.end {
        case .client: self.session.clientActive(context)
        case .upstream: self.session.upstreamActive(context)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.end {
        case .client: self.session.clientRead(Self.unwrapInboundIn(data))
        case .upstream: self.session.upstreamRead(Self.unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        switch self.end {
        case .client: self.session.clientReadComplete()
        case .upstream: self.session.upstreamReadComplete()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch self.end {
        case .client: self.session.clientInactive()
        case .upstream: self.session.upstreamInactive()
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        switch self.end {
        case .client: self.session.clientWritabilityChanged()
        case .upstream: self.session.upstreamWritabilityChanged()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        switch self.end {
        case .client:
            if self.session.clientReadable { context.read() } else { self.session.pendingClientRead = true }
        case .upstream:
            if self.session.upstreamReadable { context.read() } else { self.session.pendingUpstreamRead = true }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RelayShutdownEvent {
            self.session.closeBoth(reason: .shutdown)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch self.end {
        case .client: self.session.clientFailed(error)
        case .upstream: context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
