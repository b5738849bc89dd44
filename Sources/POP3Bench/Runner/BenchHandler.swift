import NIOCore
import NIOSSL
import NIOTLS

/// Runs one ``BenchClient`` on a connection: bytes in, its actions done, a timer for replies that do not come.
/// It decides nothing.
final class BenchHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var client: BenchClient
    private let tls: NIOSSLContext?
    private let serverName: String?
    private let timeout: TimeAmount
    private let holding: HoldGate?
    private let promise: EventLoopPromise<BenchRunner.SessionResult>
    private var result = BenchRunner.SessionResult(outcome: .completed)
    private var timer: Scheduled<Void>?
    private var finished = false
    /// `idle`: this session reached the hold.
    private var held = false
    /// `idle`: tells the hold that this session will never reach it (once, whoever calls first).
    private let leave: @Sendable () -> Void
    private var context: ChannelHandlerContext?

    init(
        client: BenchClient,
        tls: NIOSSLContext?,
        serverName: String?,
        timeout: TimeAmount,
        holding: HoldGate?,
        leave: @escaping @Sendable () -> Void,
        promise: EventLoopPromise<BenchRunner.SessionResult>
    ) {
        self.leave = leave
        self.client = client
        self.tls = tls
        self.serverName = serverName
        self.timeout = timeout
        self.holding = holding
        self.promise = promise
    }

    private static var now: Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        self.execute(self.client.connected(now: Self.now))
        self.arm()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        self.execute(self.client.received(&bytes, now: Self.now))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            self.execute(self.client.tlsEstablished(now: Self.now))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.execute(self.client.closed())
        self.finish(.failed("closed: the connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let kind = error is NIOSSLError || error is BoringSSLError ? "tls" : "connection"
        self.finish(.failed("\(kind): \(error)"))
        context.close(promise: nil)
    }

    private func execute(_ actions: [BenchClient.Action]) {
        guard let context = self.context else { return }
        for action in actions {
            switch action {
            case .send(let line):
                context.writeAndFlush(
                    Self.wrapOutboundOut(context.channel.allocator.buffer(string: line)),
                    promise: nil
                )
                self.arm()
            case .startTLS:
                guard let tls = self.tls else {
                    self.finish(.failed("tls: STLS without a TLS configuration"))
                    context.close(promise: nil)
                    return
                }
                do {
                    try context.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: tls, serverHostname: self.serverName),
                        position: .first
                    )
                } catch {
                    self.finish(.failed("tls: \(error)"))
                    context.close(promise: nil)
                }
            case .holding:
                self.held = true
                self.timer?.cancel()
                self.timer = nil
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                let loop = context.eventLoop
                self.holding?.arrived {
                    loop.execute {
                        bound.value.execute(bound.value.client.release(now: Self.now))
                    }
                }
            case .replied(_, let nanoseconds, let octets):
                self.result.commands.append(nanoseconds)
                self.result.octets += octets
            case .finished(let outcome):
                self.finish(outcome)
                context.close(promise: nil)
            }
        }
    }

    private func arm() {
        self.timer?.cancel()
        guard let context = self.context, !self.finished else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let seconds = Double(self.timeout.nanoseconds) / 1e9
        self.timer = context.eventLoop.scheduleTask(in: self.timeout) {
            bound.value.finish(.failed("timeout: no reply in \(seconds) s"))
            bound.value.context?.close(promise: nil)
        }
    }

    private func finish(_ outcome: BenchClient.Outcome) {
        guard !self.finished else { return }
        self.finished = true
        self.timer?.cancel()
        self.timer = nil
        // A session that fails before the hold would keep the others waiting.
        if case .failed = outcome, !self.held { self.leave() }
        self.result.outcome = outcome
        self.promise.succeed(self.result)
    }
}

@available(*, unavailable)
extension BenchHandler: Sendable {}
