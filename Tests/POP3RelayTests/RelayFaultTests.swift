import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO
import PopgateTestSupport
import Testing

@testable import POP3Relay

/// An upstream that misbehaves on purpose: it greets or not, and answers each line as `respond` says,
/// closing the connection when `respond` returns nil.
final class FaultyUpstream: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let greeting: String?
    let respond: @Sendable (String) -> String?

    init(greeting: String?, respond: @escaping @Sendable (String) -> String?) {
        self.greeting = greeting
        self.respond = respond
    }

    func channelActive(context: ChannelHandlerContext) {
        if let greeting { context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: greeting)), promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let text = String(buffer: Self.unwrapInboundIn(data))
        for line in text.split(separator: "\r\n") {
            guard let reply = self.respond(String(line)) else {
                context.close(promise: nil)
                return
            }
            // A reply ending in "<close>" is sent without that mark, and the connection closes after it.
            if reply.hasSuffix("<close>") {
                let channel = context.channel
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: String(reply.dropLast(7)))))
                    .whenComplete { _ in channel.close(promise: nil) }
                return
            }
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: reply)), promise: nil)
        }
    }

    /// A gateway in front of an upstream that greets "+OK hi", answers every line "+OK" and keeps the lines it got.
    static func withRecordingGateway(
        adjust: (inout RelayConfiguration) -> Void = { _ in },
        body: (Gateway, NIOLockedBox) async throws -> Void
    ) async throws {
        let seen = NIOLockedBox()
        try await Self.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                seen.append(line)
                return "+OK\r\n"
            },
            adjust: adjust,
            body: { try await body($0, seen) }
        )
    }

    /// Runs `body` with a gateway in front of a new misbehaving upstream; stops both afterwards, whatever happens.
    static func withGateway(
        greeting: String?,
        respond: @escaping @Sendable (String) -> String?,
        adjust: (inout RelayConfiguration) -> Void = { _ in },
        body: (Gateway) async throws -> Void
    ) async throws {
        let upstream = try await Self.start(greeting: greeting, respond: respond)
        let gateway: Gateway
        do {
            gateway = try await Gateway.start(upstreamPort: upstream.localAddress!.port!, adjust: adjust)
        } catch {
            try? await upstream.close()
            throw error
        }
        do {
            try await body(gateway)
        } catch {
            await gateway.stop()
            try? await upstream.close()
            throw error
        }
        await gateway.stop()
        try await upstream.close()
    }

    static func start(greeting: String?, respond: @escaping @Sendable (String) -> String?) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FaultyUpstream(greeting: greeting, respond: respond))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }
}

@Suite("Relay faults", .timeLimit(.minutes(1)))
struct RelayFaultTests {
    @Test("an unreachable upstream: the client gets -ERR [SYS/TEMP] and a clean close")
    func unreachable() async throws {
        let (port, reserved) = try Dovecot.refusingPort()
        defer { close(reserved) }
        let gateway = try await Gateway.start(upstreamPort: port)
        try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
            (s: inout POP3Client.Session) async throws in
            #expect(s.greeting.firstLine == "-ERR [SYS/TEMP] upstream 127.0.0.1:\(port) is unreachable")
            #expect(try await s.readUntilClosed().readableBytes == 0)
        }
        await gateway.sink.waitForEnded(1)
        #expect(
            gateway.sink.ended.withLockedValue { $0.values.first?.ending } == SessionEnd.upstreamUnreachable.rawValue
        )
        await gateway.stop()
    }

    @Test("every ended session is freed, however it ended: quit, vanished client, upstream gone, refused line")
    func endedSessionsAreFreed() async throws {
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                switch line {
                case "QUIT": "+OK bye\r\n<close>"
                case "STAT": nil
                default: "+OK\r\n"
                }
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    _ = try await s.send("USER a")
                    // While a session is open, its state is held.
                    #expect(gateway.server.registry.sessionsInMemory == 1)
                    _ = try await s.send("QUIT")
                }
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    _ = try await s.send("USER a")  // then the client goes without QUIT
                }
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    _ = try await s.send(String(repeating: "X", count: 300))  // refused by the gateway
                    _ = try? await s.send("STAT")  // the upstream goes away
                }
                await gateway.sink.waitForEnded(3)
                for _ in 0..<100 where gateway.server.registry.sessionsInMemory > 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(gateway.server.registry.sessionsInMemory == 0)
            }
        )
    }

    @Test("a client that leaves right after QUIT: the upstream gets 5 s to answer it, then is closed")
    func quitThenLeave() async throws {
        // QUIT is answered by silence: the gateway must neither cut the upstream at once (the answer commits
        // DELE marks) nor wait for ever.
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                line == "QUIT" ? "" : "+OK\r\n"
            },
            body: { gateway in
                let sent = NIOLockedValueBox(ContinuousClock.now)
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    _ = try await s.send("USER a")
                    sent.withLockedValue { $0 = .now }
                    try await s.write(ByteBuffer(string: "QUIT\r\n"))
                }
                // Ended (both connections closed) although the upstream never answers nor closes: the gateway closed it.
                await gateway.sink.waitForEnded(1, seconds: 30)
                let waited = ContinuousClock.now - sent.withLockedValue { $0 }
                #expect(
                    gateway.sink.ended.withLockedValue { $0.values.first?.ending } == SessionEnd.clientQuit.rawValue
                )
                // Not at once: the 5 s for the answer began after QUIT was sent. (No upper bound: a loaded machine is slow.)
                #expect(waited >= .milliseconds(4900))
            }
        )
    }

    @Test(
        "an output directory that cannot be made: the gateway does not start, and says which",
        arguments: [true, false]
    )
    func unwritableOutput(_ pcap: Bool) {
        var configuration = RelayConfiguration()
        configuration.listeners = [
            .init(listen: [Endpoint(host: "127.0.0.1", port: 0)], upstream: Endpoint(host: "127.0.0.1", port: 110))
        ]
        if pcap {
            configuration.pcap = "/proc/popgate-no/pcap"
        } else {
            configuration.transcripts = "/proc/popgate-no/t"
        }
        do {
            _ = try RelayServer(configuration: configuration)
            Issue.record("started with an output directory it cannot create")
        } catch {
            #expect(
                "\(error)".hasPrefix("cannot create the \(pcap ? "pcap" : "transcript") directory /proc/popgate-no/")
            )
        }
    }

    @Test("a command that arrives in pieces reaches the upstream whole, with its CRLF")
    func commandInPieces() async throws {
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                line == "NOOP" ? "+OK whole\r\n" : "-ERR saw \(line.debugDescription)\r\n"
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    // Split inside the keyword and between CR and LF: the gateway joins the pieces before forwarding.
                    try await s.write(ByteBuffer(string: "NO"))
                    try await Task.sleep(for: .milliseconds(50))
                    try await s.write(ByteBuffer(string: "OP\r"))
                    try await Task.sleep(for: .milliseconds(50))
                    #expect(try await s.sendRaw(ByteBuffer(string: "\n")).firstLine == "+OK whole")
                    // And a whole line in one piece after it.
                    #expect(try await s.send("NOOP").firstLine == "+OK whole")
                }
            }
        )
    }

    @Test("an upstream that never greets: -ERR [SYS/TEMP] after the greeting timeout")
    func silent() async throws {
        try await FaultyUpstream.withGateway(
            greeting: nil,
            respond: { _ in "" },
            adjust: {
                $0.greetingTimeout = .milliseconds(300)
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    #expect(s.greeting.firstLine.hasPrefix("-ERR [SYS/TEMP] upstream 127.0.0.1:"))
                    #expect(s.greeting.firstLine.hasSuffix("did not greet in time"))
                }
                await gateway.sink.waitForEnded(1)
                #expect(
                    gateway.sink.ended.withLockedValue { $0.values.first?.ending }
                        == SessionEnd.greetingTimeout.rawValue
                )
            }
        )
    }

    @Test("an upstream that dies with commands pending: each gets -ERR [SYS/TEMP], in order, then the close")
    func diesWithPending() async throws {
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                line == "STAT" ? nil : "+OK\r\n"
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    #expect(try await s.send("USER a").isOK)
                    #expect(try await s.send("PASS b").isOK)
                    let replies = try await s.sendRaw(ByteBuffer(string: "NOOP\r\nSTAT\r\nLIST\r\n"))
                    let lines = replies.text.split(separator: "\r\n").map(String.init)
                    #expect(lines.first == "+OK")
                    #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("-ERR [SYS/TEMP] upstream 127.0.0.1:") })
                    #expect(lines.count == 3)
                    #expect(try await s.readUntilClosed().readableBytes == 0)
                }
                await gateway.sink.waitForEnded(1)
                #expect(gateway.sink.anomalies.contains { $0.rule == .unexpectedServerData && $0.side == .server })
            }
        )
    }

    @Test("an upstream that dies mid-reply: the client connection is closed, the truncated reply recorded")
    func diesMidReply() async throws {
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                line == "RETR 1" ? "+OK\r\nSubject: half\r\n\r\nhal<close>" : "+OK\r\n"
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    #expect(try await s.send("USER a").isOK)
                    #expect(try await s.send("PASS b").isOK)
                    // Part of the reply came through; no -ERR can follow it, so the connection just closes.
                    await #expect(throws: POP3Client.Failure.self) { _ = try await s.send("RETR 1") }
                }
                await gateway.sink.waitForEnded(1)
                #expect(gateway.sink.anomalies.contains { $0.reason.contains("truncated reply") })
                #expect(
                    !gateway.sink.allEvents.contains {
                        if case .reply(let r) = $0 { r.side == .gateway } else { false }
                    }
                )
            }
        )
    }

    @Test("STLS: plaintext sent after STLS is not forwarded, and what follows is relayed unread")
    func stlsInjection() async throws {
        let seen = NIOLockedBox()
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                seen.append(line)
                return line == "STLS" ? "+OK begin TLS\r\n" : "+OK\r\n"
            },
            body: { gateway in
                try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                    (s: inout POP3Client.Session) async throws in
                    let reply = try await s.sendRaw(ByteBuffer(string: "STLS\r\nUSER injected\r\n"))
                    #expect(reply.firstLine == "+OK begin TLS")
                }
                await gateway.sink.waitForEnded(1)
                #expect(seen.lines == ["STLS"])
                #expect(gateway.sink.anomalies.contains { $0.rule == .stls && $0.side == .client })
            }
        )
    }
}

/// Lines an upstream saw, from its event loop.
final class NIOLockedBox: Sendable {
    private let box = NIOLockedValueBox<[String]>([])
    func append(_ line: String) { self.box.withLockedValue { $0.append(line) } }
    var lines: [String] { self.box.withLockedValue { $0 } }
}
