import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PopgateTestSupport
import Testing

@testable import POP3NIO
@testable import POP3Relay

/// Greets, says +OK to everything, and answers RETR with `mebibytes` MiB of 1 KiB lines, each chunk written
/// when the last one has gone (a server as fast as the gateway lets it be).
final class StreamingUpstream: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let mebibytes: Int

    init(mebibytes: Int) { self.mebibytes = mebibytes }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "+OK streaming\r\n")), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: Self.unwrapInboundIn(data))
        for line in text.split(separator: "\r\n") {
            if line.hasPrefix("RETR") {
                context.write(Self.wrapOutboundOut(ByteBuffer(string: "+OK here it comes\r\n")), promise: nil)
                self.stream(left: self.mebibytes, context: context)
            } else {
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "+OK\r\n")), promise: nil)
            }
        }
    }

    private static let chunk: ByteBuffer = {
        var line = String(repeating: "x", count: 1022) + "\r\n"
        line = String(repeating: line, count: 1024)
        return ByteBuffer(string: line)
    }()

    private func stream(left: Int, context: ChannelHandlerContext) {
        guard left > 0 else {
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: ".\r\n")), promise: nil)
            return
        }
        let loop = context.eventLoop
        let bound = NIOLoopBound(context, eventLoop: loop)
        context.writeAndFlush(Self.wrapOutboundOut(Self.chunk)).whenSuccess {
            self.stream(left: left - 1, context: bound.value)
        }
    }
}

@Suite("Relay outputs under hostile load", .timeLimit(.minutes(2)))
struct RelayOutputTests {
    @Test(
        "an upstream streaming far more than the export may hold while the disk stalls: the export stops, says so, the relay goes on"
    )
    func streamingUpstreamWithStalledDisk() async throws {
        let mebibytes = 48
        let upstream = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(StreamingUpstream(mebibytes: mebibytes))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-stream-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gateway = try await Gateway.start(upstreamPort: upstream.localAddress!.port!) {
            $0.pcap = directory
            $0.outputBuffer = 1 << 20
        }
        let writer = gateway.server.writer
        // The disk stalls for the whole session.
        writer.queue.suspend()
        let script = """
            import socket
            s = socket.create_connection(('127.0.0.1', \(gateway.port))); f = s.makefile('rb'); f.readline()
            for c in (b'USER a', b'PASS b'): s.sendall(c + b'\\r\\n'); f.readline()
            s.sendall(b'RETR 1\\r\\n'); f.readline()
            total = 0
            while True:
                line = f.readline()
                if line in (b'.\\r\\n', b''): break
                total += len(line)
            s.sendall(b'QUIT\\r\\n'); print(total, f.readline().decode().strip())
            """
        let watching = NIOLockedValueBox(true)
        let peak = NIOLockedValueBox(0)
        let watcher = Task {
            while watching.withLockedValue({ $0 }) {
                let now = writer.unwrittenOctets
                peak.withLockedValue { $0 = max($0, now) }
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        let output = try await runTool("python3", ["-c", script])
        watching.withLockedValue { $0 = false }
        await watcher.value
        // Every octet reached the client, and the session went on to its QUIT.
        #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) == "\(mebibytes << 20) +OK", "\(output)")
        // The export held no more than its bound, and stopped.
        #expect(peak.withLockedValue { $0 } <= (1 << 20) + 512)
        #expect(writer.stoppedFiles == 1)
        writer.queue.resume()
        await gateway.sink.waitForEnded(1)
        await gateway.stop()
        try await upstream.close()

        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        try #require(files.count == 1)
        let path = directory + "/" + files[0]
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size <= (1 << 20) + 512)
        // The file reads whole, its last packet the note (tshark shows it as a syslog message).
        let shown = try await runTool("tshark", ["-r", path, "-Y", "syslog", "-T", "fields", "-e", "syslog.msg"])
        #expect(shown.contains("popgate: export of session"), "\(shown)")
        #expect(shown.contains("stops here: the disk is"), "\(shown)")
    }
}
