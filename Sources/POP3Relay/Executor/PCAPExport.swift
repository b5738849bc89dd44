import Dispatch
import NIOCore
import NIOEmbedded
import NIOExtras
import POP3Core
import POP3NIO

#if canImport(Glibc)
import Glibc
#endif

/// `serve --pcap DIR`: each session's plaintext, as the gateway saw it, in `DIR/ID.pcap`.
///
/// NIOExtras' `NIOWritePCAPHandler` makes the packets. It does not sit in the relay's pipeline: there it
/// would record passwords, and masking in the pipeline would mask them upstream too. Each session instead
/// feeds a private `EmbeddedChannel` holding the handler with copies of its bytes, secrets masked keeping
/// their length (``ExportMask``). Files are written from one serial queue, so event loops never wait on disk.
public final class PCAPExport: Sendable {
    let directory: String
    private let queue = DispatchQueue(label: "popgate.pcap")

    public init(directory: String) throws {
        self.directory = directory
        try OutputFiles.prepare(directory, for: "pcap directory")
    }

    /// Starts a session's file; call on the session's event loop, which is the only one that may use it.
    func start(id: String, client: SocketAddress?, gateway: SocketAddress?) -> SessionPCAP? {
        let path = self.directory + "/" + id + ".pcap"
        // The handler puts addresses in IP headers; unix sockets and unknowns get loopback stand-ins.
        guard let local = SessionPCAP.ipAddress(gateway) ?? (try? SocketAddress(ipAddress: "127.0.0.1", port: 110)),
            let remote = SessionPCAP.ipAddress(client) ?? (try? SocketAddress(ipAddress: "127.0.0.1", port: 1))
        else { return nil }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return nil }
        return SessionPCAP(fd: fd, queue: self.queue, local: local, remote: remote)
    }

    /// Waits until everything handed to the queue so far is on disk.
    public func flush() {
        self.queue.sync {}
    }

}

/// One session's pcap file. Client bytes are inbound, the gateway's and the upstream's outbound, as seen by
/// the gateway's listening socket (`NIOWritePCAPHandler` in server mode).
final class SessionPCAP {
    private let channel: EmbeddedChannel
    private let fd: Int32
    private let queue: DispatchQueue
    private var challenges = ExportMask.Challenges()
    private var closed = false

    fileprivate init(fd: Int32, queue: DispatchQueue, local: SocketAddress, remote: SocketAddress) {
        self.fd = fd
        self.queue = queue
        let sink: (ByteBuffer) -> Void = { bytes in
            queue.async { bytes.withUnsafeReadableBytes { OutputFiles.writeAll(fd, $0) } }
        }
        let handler = NIOWritePCAPHandler(
            mode: .server,
            fakeLocalAddress: local,
            fakeRemoteAddress: Self.sameFamily(remote, as: local),
            settings: .init(emitPCAPWrites: .whenIssued),
            fileSink: sink
        )
        self.channel = EmbeddedChannel(handlers: [DiscardOutbound(), handler, DiscardInbound()])
        sink(NIOWritePCAPHandler.pcapFileHeader)
        // Makes the handler write the handshake packets.
        _ = self.channel.connect(to: remote)
    }

    /// Bytes from the client (already masked where they hold a secret).
    func fromClient(_ bytes: ByteBuffer) {
        guard !self.closed, bytes.readableBytes > 0 else { return }
        _ = try? self.channel.writeInbound(bytes)
    }

    /// A client line: its secret masked with the same number of octets.
    func clientLine(_ content: ByteBuffer, _ ending: LineFramer.Ending, saslResponse: Bool) {
        var line = ExportMask.commandLine(content, saslResponse: saslResponse)
        line.writeStaticString(ending == .crlf ? "\r\n" : "\n")
        self.fromClient(line)
    }

    /// An over-long line: the gateway kept its first octets; the rest is filled in to its full length. A SASL
    /// response is masked whole.
    func clientOverlongLine(prefix: ByteBuffer, octets: Int, saslResponse: Bool) {
        var line = ExportMask.commandLine(prefix, saslResponse: saslResponse)
        let fill = max(0, octets - line.readableBytes - 1)
        line.writeRepeatingByte(UInt8(ascii: "~"), count: fill)
        line.writeStaticString("\n")
        self.fromClient(line)
    }

    /// Bytes to the client: the upstream's, or the gateway's own replies. `saslOpen` masks challenge texts.
    func toClient(_ bytes: ByteBuffer, saslOpen: Bool = false) {
        guard !self.closed, bytes.readableBytes > 0 else { return }
        let shown: ByteBuffer
        if saslOpen {
            shown = self.challenges.mask(bytes)
        } else {
            self.challenges.reset()
            shown = bytes
        }
        _ = try? self.channel.writeOutbound(IOData.byteBuffer(shown))
    }

    /// What the relay machine shows the export.
    func export(_ export: RelayMachine.Export) {
        switch export {
        case .clientLine(let content, let ending, let saslResponse):
            self.clientLine(content, ending, saslResponse: saslResponse)
        case .clientOverlongLine(let prefix, let octets, let saslResponse):
            self.clientOverlongLine(prefix: prefix, octets: octets, saslResponse: saslResponse)
        case .fromClient(let bytes):
            self.fromClient(bytes)
        case .toClient(let bytes, let saslExchange):
            self.toClient(bytes, saslOpen: saslExchange)
        }
    }

    /// Writes the closing packets and closes the file once the queue has written everything before it.
    func finish() {
        guard !self.closed else { return }
        self.closed = true
        _ = try? self.channel.finish(acceptAlreadyClosed: true)
        let fd = self.fd
        self.queue.async { close(fd) }
    }

    static func ipAddress(_ address: SocketAddress?) -> SocketAddress? {
        switch address {
        case .v4, .v6: return address
        default: return nil
        }
    }

    /// The handler needs both ends in one IP family; an IPv4 client on a dual-stack listener has one.
    private static func sameFamily(_ remote: SocketAddress, as local: SocketAddress) -> SocketAddress {
        switch (remote, local) {
        case (.v4, .v4), (.v6, .v6): return remote
        case (.v4, .v6):
            let mapped = "::ffff:" + (remote.ipAddress ?? "127.0.0.1")
            return (try? SocketAddress(ipAddress: mapped, port: remote.port ?? 1)) ?? remote
        default:
            return (try? SocketAddress(ipAddress: "127.0.0.1", port: remote.port ?? 1)) ?? remote
        }
    }
}

/// Ends the private channel's outbound path, so exported bytes are not kept.
private final class DiscardOutbound: ChannelOutboundHandler {
    typealias OutboundIn = IOData

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        promise?.succeed()
    }
}

/// Ends the private channel's inbound path, so exported bytes are not kept.
private final class DiscardInbound: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
