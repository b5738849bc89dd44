import NIOCore
import POP3Core

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Where a tap delivers what it read: the session's events, already in order.
/// A class, so that each session holds a reference to it (16 octets, not a 40-octet existential box).
public protocol ConversationSink: AnyObject, Sendable {
    func sessionStarted(_ session: SessionInfo, time: Double)
    func events(_ events: [ConversationEvent], session: SessionInfo, time: Double)
    func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary)
    /// The login named its user (USER, APOP, AUTH PLAIN's authcid, LOGIN's first response): for live views.
    func userIdentified(_ user: String, session: SessionInfo)
}

extension ConversationSink {
    public func userIdentified(_ user: String, session: SessionInfo) {}
}

/// Who a session is between.
public struct SessionInfo: Sendable, Hashable {
    public var id: String
    public var client: String?
    public var server: String?
    /// The balancer the client came through, when a PROXY protocol header named the client.
    public var via: String?
    /// The relay's listening address the client came to.
    public var gateway: String?
    /// The name of the relay's listener, for metrics and the live page (never an address).
    public var listener: String?

    public init(id: String, client: String?, server: String?, via: String? = nil) {
        self.id = id
        self.client = client
        self.server = server
        self.via = via
    }
}

/// How a session went, for its last transcript line and the log.
public struct SessionSummary: Sendable, Hashable {
    public var clientOctets: Int
    public var serverOctets: Int
    public var commands: Int
    public var anomalies: Int
    public var finalState: ConversationState
    /// How the session ended, when the one who saw it knows (the relay does).
    public var ending: String?
    /// Seconds from the session's start to its end, when the recorder saw both.
    public var duration: Double?

    public init(
        clientOctets: Int,
        serverOctets: Int,
        commands: Int,
        anomalies: Int,
        finalState: ConversationState,
        ending: String? = nil
    ) {
        self.clientOctets = clientOctets
        self.serverOctets = serverOctets
        self.commands = commands
        self.anomalies = anomalies
        self.finalState = finalState
        self.ending = ending
    }

    public var description: String {
        (self.ending.map { $0 + "; " } ?? "")
            + "\(self.commands) commands, \(self.clientOctets) octets from the client, \(self.serverOctets) from the "
            + "server, \(self.anomalies) anomal\(self.anomalies == 1 ? "y" : "ies"), ended in \(self.finalState.displayName)"
    }
}

/// A pass-through handler that shows a channel's traffic to the conversation machine.
///
/// Inbound bytes are what the peer at the far end sent; outbound bytes are what this side sends. On a
/// server's or a gateway's client-facing channel, inbound is the client and outbound the server. It never
/// changes a byte: it observes.
public final class ConversationTapHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var machine: ConversationMachine
    private var recorder: SessionRecorder
    private var clientOctets = 0
    private var serverOctets = 0
    private var started = false
    private var ended = false

    public init(
        sessionID: String,
        configuration: ConversationMachine.Configuration = .init(),
        sink: any ConversationSink
    ) {
        self.machine = ConversationMachine(configuration: configuration)
        self.recorder = SessionRecorder(sink: sink, info: SessionInfo(id: sessionID, client: nil, server: nil))
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.start(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        self.start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !self.started else { return }
        self.started = true
        self.recorder.start(
            client: context.channel.remoteAddress.map(Self.describe),
            server: context.channel.localAddress.map(Self.describe),
            time: Self.now()
        )
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Self.unwrapInboundIn(data)
        self.clientOctets += bytes.readableBytes
        let time = Self.now()
        self.recorder.record(self.machine.clientSent(bytes, at: time), time: time)
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = Self.unwrapOutboundIn(data)
        self.serverOctets += bytes.readableBytes
        let time = Self.now()
        self.recorder.record(self.machine.serverSent(bytes, at: time), time: time)
        context.write(data, promise: promise)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.end()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.end()
    }

    private func end() {
        guard self.started, !self.ended else { return }
        self.ended = true
        let time = Self.now()
        // Whoever closed, both directions are over now.
        self.recorder.record(self.machine.clientClosed(at: time) + self.machine.serverClosed(at: time), time: time)
        self.recorder.end(
            time: time,
            clientOctets: self.clientOctets,
            serverOctets: self.serverOctets,
            commands: self.machine.commandCount,
            finalState: self.machine.state,
            ending: nil
        )
    }

    /// `1.2.3.4:110` or `[::1]:110`.
    public static func describe(_ address: SocketAddress) -> String {
        switch address {
        case .v4: "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        case .v6: "[\(address.ipAddress ?? "?")]:\(address.port ?? 0)"
        case .unixDomainSocket: address.pathname ?? "unix"
        }
    }
}

@available(*, unavailable)
extension ConversationTapHandler: Sendable {}
