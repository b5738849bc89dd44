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
/// their length (``ExportMask``). ``OutputWriter`` writes the files, so event loops never wait on the disk,
/// and memory stays bounded whatever the peers send: a session whose file falls behind ends it with a note.
public final class PCAPExport: Sendable {
    let directory: String
    public let writer: OutputWriter

    public init(directory: String, writer: OutputWriter = OutputWriter()) throws {
        self.directory = directory
        self.writer = writer
        try OutputFiles.prepare(directory, for: "pcap directory")
    }

    /// Starts a session's file; call on the session's event loop, which is the only one that may use it.
    func start(id: String, client: SocketAddress?, gateway: SocketAddress?) -> SessionPCAP? {
        let path = self.directory + "/" + id + ".pcap"
        // The handler puts addresses in IP headers; unix sockets and unknowns get loopback stand-ins.
        guard let local = SessionPCAP.ipAddress(gateway) ?? (try? SocketAddress(ipAddress: "127.0.0.1", port: 110)),
            let remote = SessionPCAP.ipAddress(client) ?? (try? SocketAddress(ipAddress: "127.0.0.1", port: 1))
        else { return nil }
        let file = self.writer.open(
            path,
            note: { reason in SessionPCAP.note("export of session \(id) stops here: \(reason); the session goes on") }
        )
        return SessionPCAP(id: id, file: file, local: local, remote: remote)
    }

    /// Waits until everything written so far is on disk.
    public func flush() { self.writer.flush() }

}

/// One session's pcap file. Client bytes are inbound, the gateway's and the upstream's outbound, as seen by
/// the gateway's listening socket (`NIOWritePCAPHandler` in server mode).
final class SessionPCAP {
    private let channel: EmbeddedChannel
    private let file: OutputWriter.File
    private let id: String

    private let state: State
    private var challenges = ExportMask.Challenges()

    /// Shared with the handler's sink, on the session's event loop.
    private final class State {
        /// The session ended, or its file fell behind and takes nothing more.
        var closed = false
    }

    fileprivate init(id: String, file: OutputWriter.File, local: SocketAddress, remote: SocketAddress) {
        self.id = id
        self.file = file
        let state = State()
        self.state = state
        if !file.append(NIOWritePCAPHandler.pcapFileHeader) { state.closed = true }
        self.channel = Self.stream(file: file, state: state, local: local, remote: Self.sameFamily(remote, as: local))
    }

    /// One TCP stream in the file, its handshake packets written.
    private static func stream(
        file: OutputWriter.File,
        state: State,
        local: SocketAddress,
        remote: SocketAddress
    ) -> EmbeddedChannel {
        let handler = NIOWritePCAPHandler(
            mode: .server,
            fakeLocalAddress: local,
            fakeRemoteAddress: remote,
            settings: .init(emitPCAPWrites: .whenIssued),
            fileSink: { bytes in if !file.append(bytes) { state.closed = true } }
        )
        let channel = EmbeddedChannel(handlers: [DiscardOutbound(), handler, DiscardInbound()])
        _ = channel.connect(to: remote)
        return channel
    }

    /// The gateway answered STLS and TLS is up: what follows in this stream is the plaintext inside TLS. Readers
    /// that follow STLS (tshark, `popgate inspect`) take it for TLS from here, so the file says so in a note.
    /// (A second TCP stream would read as POP3 in tshark, but as a session without a greeting in the inspector:
    /// false alarms, until the inspector reads sessions caught mid-way.)
    func tlsBegan(_ version: String) {
        guard !self.state.closed else { return }
        self.file.append(
            Self.note(
                "session \(self.id): \(version) began after STLS; what follows in this stream is the plaintext inside it"
            )
        )
    }

    /// Bytes from the client (already masked where they hold a secret).
    func fromClient(_ bytes: ByteBuffer) {
        guard !self.state.closed, bytes.readableBytes > 0 else { return }
        _ = try? self.channel.writeInbound(bytes)
    }

    /// A client line: its secret masked with the same number of octets.
    func clientLine(_ content: ByteBuffer, _ ending: LineFramer.Ending, saslResponse: Bool) {
        var line = ExportMask.commandLine(content, saslResponse: saslResponse)
        line.writeStaticString(ending == .crlf ? "\r\n" : "\n")
        self.fromClient(line)
    }

    /// An over-long line: the first octets the gateway kept (masked as any line), then its length; the rest is
    /// not kept anywhere, so it costs nothing whatever its size.
    func clientOverlongLine(prefix: ByteBuffer, octets: Int, saslResponse: Bool) {
        var line = ExportMask.commandLine(prefix, saslResponse: saslResponse)
        line.writeString(" [popgate: \(octets) octets in all; the rest is not recorded]\r\n")
        self.fromClient(line)
    }

    /// Bytes to the client: the upstream's, or the gateway's own replies. `saslOpen` masks challenge texts.
    func toClient(_ bytes: ByteBuffer, saslOpen: Bool = false) {
        guard !self.state.closed, bytes.readableBytes > 0 else { return }
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
        case .tlsBegan(let version):
            self.tlsBegan(version)
        }
    }

    /// Writes the closing packets and closes the file once the queue has written everything before it.
    func finish() {
        if !self.state.closed {
            _ = try? self.channel.finish(acceptAlreadyClosed: true)
            self.state.closed = true
        }
        self.file.close()
    }

    /// A note in the file itself: a syslog datagram on loopback, which Wireshark and tshark show as text beside
    /// the session's TCP stream without touching it.
    static func note(_ text: String) -> ByteBuffer {
        let payload = Array("<13>popgate: \(text)".utf8)
        var time = timeval()
        gettimeofday(&time, nil)
        var record = ByteBuffer()
        let packet = 4 + 20 + 8 + payload.count
        record.writeInteger(UInt32(truncatingIfNeeded: time.tv_sec), endianness: .host)
        record.writeInteger(UInt32(truncatingIfNeeded: time.tv_usec), endianness: .host)
        record.writeInteger(UInt32(packet), endianness: .host)
        record.writeInteger(UInt32(packet), endianness: .host)
        record.writeInteger(UInt32(2), endianness: .host)  // BSD loopback: IPv4
        let loopback: UInt32 = 0x7F00_0001
        let ipLength = UInt16(20 + 8 + payload.count)
        // The IPv4 header, with its checksum.
        var header: [UInt16] = [
            0x4500, ipLength, 0, 0x4000, 0xFF11, 0, UInt16(loopback >> 16), UInt16(loopback & 0xFFFF),
        ]
        header += [UInt16(loopback >> 16), UInt16(loopback & 0xFFFF)]
        var sum = header.reduce(UInt32(0)) { $0 + UInt32($1) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        header[5] = ~UInt16(sum)
        for word in header { record.writeInteger(word) }
        record.writeInteger(UInt16(514))
        record.writeInteger(UInt16(514))
        record.writeInteger(UInt16(8 + payload.count))
        record.writeInteger(UInt16(0))  // no UDP checksum
        record.writeBytes(payload)
        return record
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
