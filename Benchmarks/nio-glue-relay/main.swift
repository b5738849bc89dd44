// The floor of the platform: the smallest SwiftNIO TCP relay (accept, connect upstream, glue the two
// channels, with backpressure), parsing nothing. popgate-relay-bench runs it beside popgate serve so that
// popgate's own cost is told apart from SwiftNIO's.
// Run: nio-glue-relay LISTEN_PORT UPSTREAM_PORT [small-reads|lines]   (both on 127.0.0.1)

import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// One end of the glue; its partner is the other connection's handler.
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: GlueHandler?
    var context: ChannelHandlerContext?
    var pendingRead = false
    /// Lines framed: each line's end found, only whole lines passed on (one slice a read), the rest kept.
    let lines: Bool
    var partial: ByteBuffer?

    init(lines: Bool) { self.lines = lines }

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
        guard self.lines else { return self.partner?.context?.write(data, promise: nil) ?? () }
        var buffer = Self.unwrapInboundIn(data)
        // A line begun in the read before: it ends at this read's first line end (only its octets are copied).
        if var partial = self.partial {
            self.partial = nil
            let first = Self.lineEnd(buffer, last: false)
            var head = buffer.readSlice(length: first) ?? ByteBuffer()
            partial.writeBuffer(&head)
            guard first > 0 else {
                partial.writeBuffer(&buffer)
                self.partial = partial
                return
            }
            self.partner?.context?.write(Self.wrapOutboundOut(partial), promise: nil)
        }
        // Every other line end, as a relay that reads each line must find them; nothing parsed. Whole lines
        // go on as one slice of the read.
        if let whole = buffer.readSlice(length: Self.lineEnd(buffer, last: true)), whole.readableBytes > 0 {
            self.partner?.context?.write(Self.wrapOutboundOut(whole), promise: nil)
        }
        if buffer.readableBytes > 0 { self.partial = buffer }
    }

    /// The length up to and including the first (or, visiting every one, the last) line end; 0 when none.
    static func lineEnd(_ buffer: ByteBuffer, last: Bool) -> Int {
        buffer.withUnsafeReadableBytes { octets in
            var end = 0
            while end < octets.count, let base = octets.baseAddress,
                let newline = memchr(base + end, Int32(UInt8(ascii: "\n")), octets.count - end)
            {
                end = base.distance(to: UnsafeRawPointer(newline)) + 1
                if !last { break }
            }
            return end
        }
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
    let lines: Bool
    init(upstreamPort: Int, allocator: AdaptiveRecvByteBufferAllocator, lines: Bool) {
        self.upstreamPort = upstreamPort
        self.allocator = allocator
        self.lines = lines
    }

    func channelActive(context: ChannelHandlerContext) {
        let client = GlueHandler(lines: self.lines)
        let upstream = GlueHandler(lines: self.lines)
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
    print("usage: nio-glue-relay LISTEN_PORT UPSTREAM_PORT [small-reads|lines]")
    exit(2)
}
// small-reads: reads start at 256 octets and adapt (popgate's allocator), so an idle connection keeps no 2 KiB
// buffer: the floor popgate's memory per idle session is measured against.
let small = arguments.count == 4 && arguments[3] == "small-reads"
// lines: every line's end found and only whole lines passed on, parsing nothing: the floor of any relay that
// reads each line, as popgate does (popgate's CPU per session against it tells its parsing from its framing).
let lines = arguments.count == 4 && arguments[3] == "lines"
guard arguments.count == 3 || small || lines else {
    print("nio-glue-relay: unknown mode \(arguments[3]) (small-reads or lines)")
    exit(2)
}
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
            try channel.pipeline.syncOperations.addHandler(
                ClientEnd(upstreamPort: upstreamPort, allocator: allocator, lines: lines)
            )
        }
    }
    .bind(host: "127.0.0.1", port: listen)
    .wait()
try server.closeFuture.wait()
