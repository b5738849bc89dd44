// The floor of the platform: the smallest SwiftNIO TCP relay (accept, connect upstream, glue the two
// channels, with backpressure), parsing nothing. popgate-relay-bench runs it beside popgate serve so that
// popgate's own cost is told apart from SwiftNIO's.
// Run: nio-glue-relay LISTEN_PORT UPSTREAM_PORT   (both on 127.0.0.1)

import NIOCore
import NIOPosix

/// One end of the glue; its partner is the other connection's handler.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: GlueHandler?
    var context: ChannelHandlerContext?
    var pendingRead = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        // The client's reads wait for the upstream connection.
        if let partner = self.partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
        context.fireChannelActive()
    }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) { self.partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) { self.partner?.context?.close(promise: nil) }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner = self.partner, partner.pendingRead {
            partner.pendingRead = false
            partner.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let other = self.partner?.context?.channel, other.isActive, other.isWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }
}

/// Sets up the glue for an accepted client.
final class ClientEnd: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let upstreamPort: Int
    init(upstreamPort: Int) { self.upstreamPort = upstreamPort }

    func channelActive(context: ChannelHandlerContext) {
        let client = GlueHandler()
        let upstream = GlueHandler()
        client.partner = upstream
        upstream.partner = client
        let channel = context.channel
        let address = try? SocketAddress(ipAddress: "127.0.0.1", port: self.upstreamPort)
        try? context.pipeline.syncOperations.addHandler(client)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        guard let address else { return channel.close(promise: nil) }
        // The upstream channel runs on the client's event loop, where the two handlers meet.
        let bound = NIOLoopBound(upstream, eventLoop: channel.eventLoop)
        ClientBootstrap(group: channel.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { upstreamChannel in
                upstreamChannel.eventLoop.makeCompletedFuture {
                    try upstreamChannel.pipeline.syncOperations.addHandler(bound.value)
                }
            }
            .connect(to: address)
            .whenFailure { _ in channel.close(promise: nil) }
    }
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let listen = Int(arguments[1]), let upstreamPort = Int(arguments[2]) else {
    print("usage: nio-glue-relay LISTEN_PORT UPSTREAM_PORT")
    exit(2)
}
let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 512)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ClientEnd(upstreamPort: upstreamPort))
        }
    }
    .bind(host: "127.0.0.1", port: listen)
    .wait()
try server.closeFuture.wait()
