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
    let allocator: AdaptiveRecvByteBufferAllocator
    init(upstreamPort: Int, allocator: AdaptiveRecvByteBufferAllocator) {
        self.upstreamPort = upstreamPort
        self.allocator = allocator
    }

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
        // TCP_NODELAY is ClientBootstrap's default, as in popgate (`.socketOption(.tcp_nodelay)`, here before,
        // set SO_DEBUG: the option's level is SOL_SOCKET).
        ClientBootstrap(group: channel.eventLoop)
            .channelOption(.recvAllocator, value: self.allocator)
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
guard (3...4).contains(arguments.count), let listen = Int(arguments[1]), let upstreamPort = Int(arguments[2]) else {
    print("usage: nio-glue-relay LISTEN_PORT UPSTREAM_PORT [small-reads]")
    exit(2)
}
// small-reads: reads start at 256 octets and adapt (popgate's allocator), so an idle connection keeps no 2 KiB
// buffer: the floor popgate's memory per idle session is measured against.
let small = arguments.count == 4 && arguments[3] == "small-reads"
let allocator =
    small
    ? AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65_536) : AdaptiveRecvByteBufferAllocator()
let server = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
    .serverChannelOption(.backlog, value: 512)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    // Accepted sockets inherit TCP_NODELAY from the listening socket, which ServerBootstrap sets by default.
    .childChannelOption(.recvAllocator, value: allocator)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ClientEnd(upstreamPort: upstreamPort, allocator: allocator))
        }
    }
    .bind(host: "127.0.0.1", port: listen)
    .wait()
try server.closeFuture.wait()
