import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import POP3Core
import POP3NIO
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Array {
    fileprivate subscript(safe index: Int) -> Element? { self.indices.contains(index) ? self[index] : nil }
}

/// `popgate serve`: listeners that relay each client to its upstream, as a ServiceLifecycle service.
///
/// On graceful shutdown (SIGTERM, SIGINT, which the ServiceGroup owns) it stops accepting, lets open sessions
/// run for the grace period, ends the rest (without QUIT upstream), waits for their end records, flushes the
/// transcripts and returns. The registry knows the open sessions (each from its client's first event to its end
/// record); NIOExtras' `ServerQuiescingHelper` would track the accepted channels a second time, at a cost to every
/// session (a dictionary entry, a close callback, and a hop to the listener's loop when it closes).
public final class RelayServer: Service, Sendable {
    private enum State: Sendable {
        case initial
        /// The listening channels.
        case bound([any Channel])
        case shuttingDown
        case shutdown
    }

    public let registry = SessionRegistry()
    private let state = NIOLockedValueBox(State.initial)
    /// Read by each session as it starts, so a reload applies to the sessions that come after it.
    private let current: NIOLockedValueBox<RelayConfiguration>
    private let admission: NIOLockedValueBox<any AdmissionPolicy>
    private let logger: Logger
    private let sink: (any ConversationSink)?
    private let files: TranscriptFiles?
    private let pcap: PCAPExport?
    /// Writes the transcripts and the pcap export.
    let writer: OutputWriter
    private let group: any EventLoopGroup
    private let counter = NIOLockedValueBox(0)
    /// Counts reloads (configuration, admission, certificates): a listener's shared session settings are made
    /// again when it has moved.
    private let generation = NIOLockedValueBox(0)
    /// Each listener's TLS, by its index in the configuration, read once at start.
    /// Swapped whole by ``reloadTLS(_:)``: each new connection takes what is in force when it is accepted.
    private let tls: NIOLockedValueBox<[Int: ClientTLS]>
    /// Each listener's TLS to its upstream, by index.
    private let upstreamTLS: [Int: UpstreamTLS]
    private let idPrefix: String
    /// The rules, when the gateway has them; ``RulesGate/reload(_:)`` swaps them for new sessions.
    public let rules: RulesGate?
    private let observer: (any RelayObserver)?

    /// - Parameters:
    ///   - live: what shows sessions live when `configuration.live` is on (standard output when nil); it gets
    ///     nothing when `live` is off.
    ///   - sinks: more sinks that get every session, live or not.
    public init(
        configuration: RelayConfiguration,
        live: (any ConversationSink)? = nil,
        sinks: [any ConversationSink] = [],
        admission: any AdmissionPolicy = AdmitAll(),
        rules: RulesGate? = nil,
        observer: (any RelayObserver)? = nil,
        logger: Logger = Logger(label: "popgate"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.tls = NIOLockedValueBox(try Self.loadTLS(configuration))
        var upstreamTLS: [Int: UpstreamTLS] = [:]
        for (index, listener) in configuration.listeners.enumerated() {
            upstreamTLS[index] = try UpstreamTLS.load(listener)
            if listener.upstreamTLS != .none, !listener.upstreamVerify {
                logger.warning(
                    "the certificate of the upstream \(listener.upstream) is NOT verified (upstream-no-verify): anyone in the path can pose as it"
                )
            }
        }
        self.upstreamTLS = upstreamTLS
        self.current = NIOLockedValueBox(configuration)
        self.admission = NIOLockedValueBox(admission)
        self.rules = rules
        self.observer = observer
        self.logger = logger
        self.group = group
        // One writer for every file, so the memory bound is one.
        let writer = OutputWriter(limits: .init(total: configuration.outputBuffer), logger: logger)
        self.writer = writer
        let files = try configuration.transcripts.map {
            try TranscriptFiles(directory: $0, bodies: configuration.transcriptBodies, writer: writer)
        }
        self.files = files
        self.pcap = try configuration.pcap.map { try PCAPExport(directory: $0, writer: writer) }
        var all = sinks
        if configuration.live {
            all.append(live ?? TranscriptPrinter(output: { lines in print(lines.joined(separator: "\n")) }))
        }
        if let files { all.append(files) }
        self.sink = all.isEmpty ? nil : (all.count == 1 ? all[0] : SinkFanOut(all))
        // Session ids stay unique across restarts: the start time, then a counter.
        let stamp = TranscriptRecord.timestamp(Date().timeIntervalSince1970)
        self.idPrefix = String(stamp.filter { $0.isNumber }.prefix(14))
    }

    /// The configuration new sessions start with.
    public var configuration: RelayConfiguration { self.current.withLockedValue { $0 } }

    /// Swaps the configuration and the admission step for the sessions that start from now on (the reload
    /// path). Listeners, and what was opened at start (transcript and pcap directories), stay as they are.
    public func reconfigure(_ configuration: RelayConfiguration, admission: (any AdmissionPolicy)? = nil) {
        self.current.withLockedValue { $0 = configuration }
        if let admission { self.admission.withLockedValue { $0 = admission } }
        self.generation.withLockedValue { $0 += 1 }
    }

    /// Reads every listener's certificate and key again (from the paths in `configuration`), and swaps them in
    /// for the connections accepted from now on, all or nothing: a pair that fails leaves every one in force and
    /// throws why. Open sessions keep the TLS they began with. Resumption of a session from before the reload
    /// takes a full handshake (the tickets were the old context's).
    public func reloadTLS(_ configuration: RelayConfiguration) throws {
        let loaded = try Self.loadTLS(configuration)
        let before = self.tls.withLockedValue { $0 }
        guard loaded.keys.sorted() == before.keys.sorted() else {
            throw ClientTLS.Problem(
                description: "a listener gained or lost its certificate: restart the gateway for it"
            )
        }
        self.tls.withLockedValue { $0 = loaded }
        self.generation.withLockedValue { $0 += 1 }
        for tls in loaded.values { self.warnIfExpiring(tls) }
    }

    private static func loadTLS(_ configuration: RelayConfiguration) throws -> [Int: ClientTLS] {
        var tls: [Int: ClientTLS] = [:]
        for (index, listener) in configuration.listeners.enumerated() {
            guard let certificate = listener.certificate, let key = listener.key else { continue }
            tls[index] = try ClientTLS.load(
                certificate: certificate,
                key: key,
                named: listener.namedCertificates,
                strictNames: listener.strictNames,
                minimum: configuration.tlsMinimumVersion
            )
        }
        return tls
    }

    private func warnIfExpiring(_ tls: ClientTLS) {
        guard tls.daysLeft() < 14 else { return }
        self.logger.warning("the certificate in \(tls.certificatePath) expires in \(tls.daysLeft()) days")
    }

    /// The addresses the listeners are bound to (with the real ports when 0 was asked for).
    public var boundAddresses: [SocketAddress] {
        self.state.withLockedValue { state in
            guard case .bound(let channels) = state else { return [] }
            return channels.compactMap(\.localAddress)
        }
    }

    /// Why the gateway is not ready, or nil when it is: listening, and each listener's upstream accepts a TCP
    /// connection within `timeout` (closed at once, before any byte: the upstream sees a connection that left).
    public func readiness(timeout: TimeAmount = .seconds(2)) async -> String? {
        guard !self.boundAddresses.isEmpty else { return "not listening" }
        var seen = Set<Endpoint>()
        for listener in self.configuration.listeners where seen.insert(listener.upstream).inserted {
            do {
                let channel = try await ClientBootstrap(group: self.group)
                    .connectTimeout(timeout)
                    .connect(host: listener.upstream.host, port: listener.upstream.port)
                    .get()
                try? await channel.close()
            } catch {
                return "the upstream \(listener.upstream) cannot be reached: \(error)"
            }
        }
        return nil
    }

    /// Binds every listener. `run()` calls it when it has not been called.
    public func bind() async throws {
        guard case .initial = self.state.withLockedValue({ $0 }) else { return }
        var bound: [any Channel] = []
        do {
            for (index, listener) in self.configuration.listeners.enumerated() {
                let tls = self.tls.withLockedValue { $0[index] }
                if let tls { self.warnIfExpiring(tls) }
                let endpoints = listener.listen.map { ($0, false) } + listener.listenTLS.map { ($0, true) }
                for (endpoint, implicitTLS) in endpoints {
                    let channel: any Channel
                    do {
                        channel = try await self.bind(
                            endpoint,
                            upstream: listener.upstream,
                            listenerIndex: index,
                            terminatesTLS: tls != nil,
                            implicitTLS: implicitTLS,
                            requireTLS: listener.requireTLS,
                            proxy: listener.proxyProtocol
                        )
                    } catch let error as IOError {
                        throw ListenFailure(
                            endpoint: endpoint,
                            errno: error.errnoCode,
                            reusePort: self.configuration.reusePort
                        )
                    }
                    bound.append(channel)
                    // The port bound, which is the one to use when port 0 asked for any free port.
                    let actual = Endpoint(
                        host: channel.localAddress?.ipAddress ?? endpoint.host,
                        port: channel.localAddress?.port ?? endpoint.port
                    )
                    let proxy = listener.proxyProtocol ? ", PROXY protocol from trusted balancers" : ""
                    self.logger.info(
                        "listening on \(actual)\(implicitTLS ? " (TLS)" : "")\(proxy), relaying to \(listener.upstream)"
                    )
                }
            }
        } catch {
            for channel in bound { try? await channel.close() }
            throw error
        }
        self.state.withLockedValue { $0 = .bound(bound) }
    }

    /// A listening address that could not be taken, said in an operator's words.
    public struct ListenFailure: Error, CustomStringConvertible {
        public var endpoint: Endpoint
        public var errno: Int32
        public var reusePort: Bool

        public var description: String {
            switch self.errno {
            case EADDRINUSE:
                return "cannot listen on \(self.endpoint): the address is in use (another process listens there"
                    + (self.reusePort
                        ? " without --reuse-port)" : "; --reuse-port lets several popgate processes share a port)")
            case EACCES:
                return "cannot listen on \(self.endpoint): permission denied (ports below 1024 need privilege)"
            case EADDRNOTAVAIL:
                return "cannot listen on \(self.endpoint): no interface of this machine has that address"
            default:
                return "cannot listen on \(self.endpoint): " + String(cString: strerror(self.errno))
            }
        }
    }

    private func bind(
        _ endpoint: Endpoint,
        upstream: Endpoint,
        listenerIndex: Int,
        terminatesTLS: Bool,
        implicitTLS: Bool,
        requireTLS: Bool,
        proxy: Bool
    ) async throws -> any Channel {
        let upstreamAddress = try? SocketAddress(ipAddress: upstream.host, port: upstream.port)
        // This listener's shared session settings and the reload generation they were made in.
        let template = NIOLockedValueBox<(generation: Int, shared: RelaySessionExecutor.Shared)?>(nil)
        let registry = self.registry
        let logger = self.logger
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // NIO names no SO_REUSEPORT option; the socket's own is set.
            .serverChannelOption(
                .socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)),
                value: self.configuration.reusePort ? 1 : 0
            )
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrors(registry: registry, logger: logger))
                }
            }
            // A client that shuts down its side after its last command still gets its replies.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // Reads start small and grow with the traffic: an idle session keeps no 2 KiB buffer per side.
            .childChannelOption(.recvAllocator, value: RelaySessionExecutor.receiveAllocator)
            .childChannelInitializer { [self] channel in
                // The generation first, then what it stands for: a reload between the two makes this template
                // newer than its generation says, so the next connection makes it again (read the other way
                // round, old certificates could be kept under the new generation).
                let generation = self.generation.withLockedValue { $0 }
                let shared = template.withLockedValue { cached in
                    if let cached, cached.generation == generation { return cached.shared }
                    // The certificates in force now: a reload changes them for the connections after it.
                    let tls = terminatesTLS ? self.tls.withLockedValue { $0[listenerIndex] } : nil
                    var settings = self.sessionSettings(
                        listener: endpoint,
                        upstream: upstream,
                        address: upstreamAddress
                    )
                    settings.idPrefix = self.idPrefix
                    settings.listenerName =
                        self.configuration.listeners[safe: listenerIndex]?.displayName(
                            index: listenerIndex
                        ) ?? "listener\(listenerIndex + 1)"
                    settings.upstreamTLS = self.upstreamTLS[listenerIndex]
                    settings.clientTLS = implicitTLS
                    settings.tls = tls
                    settings.requireTLS = requireTLS && !implicitTLS
                    if proxy {
                        settings.proxy = RelayMachine.Proxy(
                            trusted: settings.configuration.proxyTrusted,
                            timeout: settings.configuration.proxyHeaderTimeout
                        )
                    }
                    let shared = RelaySessionExecutor.Shared(settings)
                    cached = (generation, shared)
                    return shared
                }
                let executor = RelaySessionExecutor(shared, number: self.nextNumber())
                let tls = shared.settings.tls
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    // Behind a balancer, TLS goes in once its PROXY header has been read.
                    if implicitTLS, !proxy, let tls {
                        try pipeline.addHandler(HelloTap { executor.tlsHelloSeen($0) })
                        try pipeline.addHandler(tls.handler())
                    }
                    try pipeline.addHandler(RelayHandler(.client, executor: executor))
                }
            }
            .bind(host: endpoint.host, port: endpoint.port)
            .get()
    }

    /// A new session's number; its id is the start time, then this.
    private func nextNumber() -> Int {
        self.counter.withLockedValue { value -> Int in
            value += 1
            return value
        }
    }

    private func sessionSettings(
        listener: Endpoint,
        upstream: Endpoint,
        address: SocketAddress?
    ) -> RelaySessionExecutor.Settings {
        let configuration = self.configuration
        return RelaySessionExecutor.Settings(
            listener: listener,
            upstream: upstream,
            upstreamAddress: address,
            configuration: configuration,
            admission: CapacityLimit(
                next: self.admission.withLockedValue { $0 },
                registry: self.registry,
                maximum: configuration.maximumSessions(descriptorLimit: Self.descriptorLimit)
            ),
            sink: self.sink,
            pcap: self.pcap,
            logger: self.logger,
            registry: self.registry,
            rules: self.rules,
            observer: self.observer
        )
    }

    /// The descriptors sessions may use: this process's soft limit less those it holds already (event loops,
    /// signals, logs), read once.
    static let descriptorLimit: Int = {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        let held = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return max(0, Int(clamping: limit.rlim_cur) - held)
    }()

    public func run() async throws {
        try await self.bind()
        // Until the ServiceGroup signals graceful shutdown (SIGTERM/SIGINT) or cancels the service.
        try? await gracefulShutdown()
        await self.shutdown()
    }

    /// Stops accepting, waits for open sessions up to the grace period, ends the rest, flushes transcripts.
    public func shutdown() async {
        let listeners = self.state.withLockedValue { state -> [any Channel]? in
            switch state {
            case .initial:
                state = .shutdown
                return nil
            case .bound(let listeners):
                state = .shuttingDown
                return listeners
            case .shuttingDown, .shutdown:
                return nil
            }
        }
        guard let listeners else { return }
        let configuration = self.configuration
        for channel in listeners { try? await channel.close() }
        // A client accepted just before its listener closed is handed to its event loop's queue and registered
        // from there; a task queued on every loop after the close runs after each such hand-over, so the registry
        // below knows every session there is.
        let loops = self.group.makeIterator().map { $0.submit {} }
        try? await EventLoopFuture.andAllComplete(loops, on: self.group.any()).get()
        let open = self.registry.count
        if open > 0 {
            self.logger.info("no longer accepting; waiting for \(open) open session(s)")
        }
        let allEnded = await self.registry.waitUntilEmpty(timeout: configuration.shutdownGrace)
        if !allEnded {
            self.logger.info("grace period over; closing \(self.registry.count) session(s) without QUIT")
            self.registry.endAll()
        }
        // Each session's end record comes once both of its connections have closed.
        _ = await self.registry.waitUntilEmpty(timeout: configuration.shutdownDrain)
        self.writer.flush()
        self.state.withLockedValue { $0 = .shutdown }
        self.logger.info("stopped")
    }

    /// Whether `future` completed within `timeout`.
    static func wait(for future: EventLoopFuture<Void>, timeout: TimeAmount) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let once = NIOLockedValueBox(false)
            let finish: @Sendable (Bool) -> Void = { value in
                let first = once.withLockedValue { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: value) }
            }
            let timer = future.eventLoop.scheduleTask(in: timeout) { finish(false) }
            future.whenComplete { _ in
                timer.cancel()
                finish(true)
            }
        }
    }
}

/// Counts and logs (rate-limited) the accepts that failed for want of descriptors; NIO's accept back-off then
/// pauses accepting, and service recovers by itself once sessions end.
private final class AcceptErrors: ChannelInboundHandler, Sendable {
    typealias InboundIn = any Channel

    let registry: SessionRegistry
    let logger: Logger

    init(registry: SessionRegistry, logger: Logger) {
        self.registry = registry
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if RelaySessionExecutor.outOfDescriptors(error) { self.registry.descriptorsExhausted(logger: self.logger) }
        context.fireErrorCaught(error)
    }
}
