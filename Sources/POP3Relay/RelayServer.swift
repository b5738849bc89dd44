import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO
import ServiceLifecycle

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// `popgate serve`: listeners that relay each client to its upstream, as a ServiceLifecycle service.
///
/// On graceful shutdown (SIGTERM, SIGINT) it stops accepting, lets open sessions run for the grace period,
/// ends the rest (without QUIT upstream), flushes transcripts and returns.
public final class RelayServer: Service, Sendable {
    public let configuration: RelayConfiguration
    public let registry = SessionRegistry()
    private let logger: Logger
    private let sink: (any ConversationSink)?
    private let files: TranscriptFiles?
    private let pcap: PCAPExport?
    private let group: any EventLoopGroup
    private let channels = NIOLockedValueBox<[any Channel]>([])
    private let counter = NIOLockedValueBox(0)
    private let idPrefix: String

    public init(
        configuration: RelayConfiguration,
        live: (any ConversationSink)? = nil,
        logger: Logger = Logger(label: "popgate"),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.group = group
        let files = try configuration.transcripts.map {
            try TranscriptFiles(directory: $0, bodies: configuration.transcriptBodies)
        }
        self.files = files
        self.pcap = try configuration.pcap.map { try PCAPExport(directory: $0) }
        let sinks: [any ConversationSink] = [live, files].compactMap { $0 }
        self.sink = sinks.isEmpty ? nil : (sinks.count == 1 ? sinks[0] : SinkFanOut(sinks))
        // Session ids stay unique across restarts: the start time, then a counter.
        let stamp = TranscriptRecord.timestamp(Date().timeIntervalSince1970)
        self.idPrefix = String(stamp.filter { $0.isNumber }.prefix(14))
    }

    /// The addresses the listeners are bound to (with the real ports when 0 was asked for).
    public var boundAddresses: [SocketAddress] {
        self.channels.withLockedValue { $0.compactMap(\.localAddress) }
    }

    /// Binds every listener. `run()` calls it when it has not been called.
    public func bind() async throws {
        guard self.channels.withLockedValue({ $0.isEmpty }) else { return }
        var bound: [any Channel] = []
        do {
            for listener in self.configuration.listeners {
                for endpoint in listener.listen {
                    let channel = try await self.bind(endpoint, upstream: listener.upstream)
                    bound.append(channel)
                    // The port bound, which is the one to use when port 0 asked for any free port.
                    let actual = Endpoint(
                        host: channel.localAddress?.ipAddress ?? endpoint.host,
                        port: channel.localAddress?.port ?? endpoint.port
                    )
                    self.logger.info("listening on \(actual), relaying to \(listener.upstream)")
                }
            }
        } catch {
            for channel in bound { try? await channel.close() }
            throw error
        }
        self.channels.withLockedValue { $0 = bound }
    }

    private func bind(_ endpoint: Endpoint, upstream: Endpoint) async throws -> any Channel {
        let configuration = self.configuration
        let sink = self.sink
        let pcap = self.pcap
        let logger = self.logger
        let registry = self.registry
        let counter = self.counter
        let prefix = self.idPrefix
        let upstreamAddress = try? SocketAddress(ipAddress: upstream.host, port: upstream.port)
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let number = counter.withLockedValue { value -> Int in
                    value += 1
                    return value
                }
                let settings = RelaySession.Settings(
                    id: "\(prefix)-\(number)",
                    upstream: upstream,
                    upstreamAddress: upstreamAddress,
                    configuration: configuration,
                    sink: sink,
                    pcap: pcap,
                    logger: logger,
                    registry: registry
                )
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RelayHandler(.client, session: RelaySession(settings))
                    )
                }
            }
            .bind(host: endpoint.host, port: endpoint.port)
            .get()
    }

    public func run() async throws {
        try await self.bind()
        // Wait for SIGTERM/SIGINT (or the group's cancellation).
        try? await gracefulShutdown()
        await self.shutdown()
    }

    /// Stops accepting, waits for open sessions up to the grace period, ends the rest, flushes transcripts.
    public func shutdown() async {
        let listeners = self.channels.withLockedValue { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in listeners { try? await channel.close() }
        let open = self.registry.count
        if open > 0 {
            self.logger.info("no longer accepting; waiting for \(open) open session(s)")
        }
        if await !self.registry.waitUntilEmpty(timeout: self.configuration.shutdownGrace) {
            self.logger.info("grace period over; closing \(self.registry.count) session(s) without QUIT")
            self.registry.endAll()
            _ = await self.registry.waitUntilEmpty(timeout: .seconds(5))
        }
        self.files?.flush()
        self.pcap?.flush()
        self.logger.info("stopped")
    }
}
