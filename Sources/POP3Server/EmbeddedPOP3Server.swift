import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO

/// The project's own POP3 server: the demo's and the fast tests' upstream.
///
/// It serves every RFC 1939 command plus CAPA, TOP, UIDL, RESP-CODES, PIPELINING and AUTH PLAIN, locks a
/// maildrop per session (`-ERR [IN-USE]`) and commits deletions only at QUIT. It is not a mail store for real
/// use: messages live in memory, so files it was loaded from are never touched.
public final class EmbeddedPOP3Server: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        /// 0 picks a free port.
        public var port = 0
        /// User names and passwords; the password is also the APOP secret.
        public var users: [String: String] = ["alice": "wonderland"]
        public var messages: [StoredMessage] = SampleMessages.generated()
        /// Shows every session's traffic to a conversation machine and delivers the events here.
        public var sink: (any ConversationSink)?

        public init() {}
    }

    public let store: MailStore
    public let localAddress: SocketAddress
    private let channel: any Channel
    private let group: any EventLoopGroup
    private let ownsGroup: Bool

    private init(store: MailStore, channel: any Channel, group: any EventLoopGroup, ownsGroup: Bool) throws {
        self.store = store
        self.channel = channel
        self.group = group
        self.ownsGroup = ownsGroup
        guard let address = channel.localAddress else {
            throw ChannelError.inappropriateOperationForState
        }
        self.localAddress = address
    }

    /// The port the server listens on.
    public var port: Int { self.localAddress.port ?? 0 }

    /// Binds and starts serving. Loopback only is the caller's choice of `host`; tests and the demo use 127.0.0.1.
    public static func start(
        _ configuration: Configuration,
        group: (any EventLoopGroup)? = nil
    ) async throws -> EmbeddedPOP3Server {
        let owned = group == nil
        let group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let store = MailStore(users: configuration.users, messages: configuration.messages)
        let counter = NIOLockedValueBox(0)
        let sink = configuration.sink
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    let id = counter.withLockedValue { value -> Int in
                        value += 1
                        return value
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        if let sink {
                            try channel.pipeline.syncOperations.addHandler(
                                ConversationTapHandler(sessionID: String(id), sink: sink)
                            )
                        }
                        try channel.pipeline.syncOperations.addHandler(
                            POP3ServerHandler(store: store, sessionNumber: id)
                        )
                    }
                }
                .bind(host: configuration.host, port: configuration.port)
                .get()
            return try EmbeddedPOP3Server(store: store, channel: channel, group: group, ownsGroup: owned)
        } catch {
            if owned { try? await group.shutdownGracefully() }
            throw error
        }
    }

    /// Stops listening; open sessions are closed with the event loop if the server owns it.
    public func stop() async throws {
        try? await self.channel.close()
        if self.ownsGroup { try await self.group.shutdownGracefully() }
    }
}

/// Serves one connection: frames lines, runs them through a ``ServerSession``, writes the replies.
final class POP3ServerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: ServerSession
    private var framer = LineFramer(limit: POP3Defaults.commandLineLimit)
    private var closing = false

    init(store: MailStore, sessionNumber: Int) {
        let stamp = "<\(sessionNumber).\(UInt32.random(in: 0...UInt32.max))@popgate.embedded>"
        self.session = ServerSession(store: store, timestamp: stamp)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(self.session.greeting), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = Self.unwrapInboundIn(data)
        while !self.closing, let frame = self.framer.next(from: &input) {
            // SASL responses may be long (RFC 5034 §4).
            let outcome: ServerSession.Outcome
            switch frame {
            case .line(let line, _):
                outcome = self.session.received(line: line)
            case .tooLong(_, let octets):
                outcome = self.session.tooLong(octets: octets)
            }
            self.framer.limit = self.isSASL ? POP3Defaults.saslLineLimit : POP3Defaults.commandLineLimit
            if outcome.close {
                self.closing = true
                let channel = context.channel
                context.writeAndFlush(Self.wrapOutboundOut(outcome.reply)).whenComplete { _ in
                    channel.close(promise: nil)
                }
            } else {
                context.write(Self.wrapOutboundOut(outcome.reply), promise: nil)
                if let body = outcome.body { context.write(Self.wrapOutboundOut(body), promise: nil) }
            }
        }
    }

    private var isSASL: Bool {
        if case .sasl = self.session.state { return true }
        return false
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A client that vanished: nothing it marked is removed (RFC 1939 §6).
        self.session.abandoned()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension POP3ServerHandler: Sendable {}
