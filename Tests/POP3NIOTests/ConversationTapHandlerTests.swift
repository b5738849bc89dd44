import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import POP3Core
import Testing

@testable import POP3NIO

/// A sink that keeps what it is given.
final class CollectingSink: ConversationSink {
    let events = NIOLockedValueBox<[ConversationEvent]>([])
    let ends = NIOLockedValueBox<[SessionSummary]>([])
    let starts = NIOLockedValueBox(0)

    func sessionStarted(_ session: SessionInfo, time: Double) { self.starts.withLockedValue { $0 += 1 } }
    func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        self.events.withLockedValue { $0 += events }
    }
    func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        self.ends.withLockedValue { $0.append(summary) }
    }
}

@Suite("Conversation tap")
struct ConversationTapHandlerTests {
    @Test("bytes pass unchanged both ways while the machine reads them")
    func passThrough() throws {
        let sink = CollectingSink()
        let channel = EmbeddedChannel(handler: ConversationTapHandler(sessionID: "1", sink: sink))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        try channel.writeOutbound(ByteBuffer(string: "+OK hi\r\n"))
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nPA"))
        try channel.writeInbound(ByteBuffer(string: "SS secret\r\n"))
        try channel.writeOutbound(ByteBuffer(string: "+OK\r\n+OK in\r\n"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "+OK hi\r\n"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "USER a\r\nPA"))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "SS secret\r\n"))
        #expect(try channel.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "+OK\r\n+OK in\r\n"))
        _ = try channel.finish()

        let events = sink.events.withLockedValue { $0 }
        let verbs = events.compactMap { if case .command(let c) = $0 { c.verb } else { nil } }
        #expect(verbs == ["USER", "PASS"])
        #expect(events.contains { if case .stateChanged(.transaction, _) = $0 { true } else { false } })
        #expect(sink.starts.withLockedValue { $0 } == 1)
        let summary = try #require(sink.ends.withLockedValue { $0 }.first)
        #expect(summary.clientOctets == 21)
        #expect(summary.serverOctets == 21)
        #expect(summary.commands == 2)
        #expect(!summary.description.contains("secret"))
    }

    @Test("the printer renders each session's lines in order and ends it once")
    func printer() throws {
        let lines = NIOLockedValueBox<[String]>([])
        let printer = TranscriptPrinter(format: .text, output: { batch in lines.withLockedValue { $0 += batch } })
        let channel = EmbeddedChannel(handler: ConversationTapHandler(sessionID: "7", sink: printer))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        try channel.writeOutbound(ByteBuffer(string: "+OK hi\r\n"))
        try channel.writeInbound(ByteBuffer(string: "PASS hunter2\r\n"))
        _ = try channel.finish()
        let text = lines.withLockedValue { $0 }.joined(separator: "\n")
        #expect(text.hasPrefix("── session 7"))
        #expect(text.contains("C: PASS ********"))
        #expect(!text.contains("hunter2"))
        #expect(text.components(separatedBy: "end of session 7").count == 2)
    }
}
