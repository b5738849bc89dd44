import NIOCore
import NIOPosix
import POP3Core

/// A small POP3 client that reads the server through its own conversation machine, so it knows where
/// each reply ends, multi-line or not. The demo's scripted session and the tests use it.
public enum POP3Client {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// One reply as it arrived: its bytes and what the machine made of them.
    public struct Exchange: Sendable {
        public var bytes: ByteBuffer
        public var events: [ConversationEvent]

        public var text: String { String(buffer: self.bytes) }
        public var firstLine: String { self.text.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? "" }
        public var isOK: Bool { self.text.hasPrefix("+OK") }
    }

    public struct Session {
        public internal(set) var machine = ConversationMachine()
        public internal(set) var greeting = Exchange(bytes: ByteBuffer(), events: [])
        /// The raw connection, for tests that misbehave on purpose.
        public var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        public let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
        /// With `record`, every chunk each side sent, in order, so a test can replay the session.
        public internal(set) var log: [(side: Side, bytes: ByteBuffer)] = []
        let record: Bool

        /// Sends `line` with CRLF and returns the reply.
        public mutating func send(_ line: String) async throws -> Exchange {
            try await self.sendRaw(ByteBuffer(string: line + "\r\n"))
        }

        /// Sends `bytes` as they are and reads until every command they hold is answered.
        public mutating func sendRaw(_ bytes: ByteBuffer) async throws -> Exchange {
            var events = self.machine.clientSent(bytes)
            if self.record { self.log.append((.client, bytes)) }
            try await self.outbound.write(bytes)
            var exchange = try await self.readReplies()
            events += exchange.events
            exchange.events = events
            return exchange
        }

        /// Sends octets and does not wait for any reply (to leave before it comes).
        public mutating func write(_ bytes: ByteBuffer) async throws {
            if self.record { self.log.append((.client, bytes)) }
            try await self.outbound.write(bytes)
        }

        /// Reads until no command waits for its reply.
        mutating func readReplies() async throws -> Exchange {
            var received = ByteBuffer()
            var events: [ConversationEvent] = []
            while self.machine.state == .greeting || self.machine.awaitingReply {
                guard var bytes = try await self.iterator.next() else {
                    throw Failure(description: "the server closed the connection while a reply was expected")
                }
                self.machine.serverSent(bytes, into: &events)
                if self.record { self.log.append((.server, bytes)) }
                received.writeBuffer(&bytes)
            }
            return Exchange(bytes: received, events: events)
        }

        /// Reads whatever comes until the server closes.
        public mutating func readUntilClosed() async throws -> ByteBuffer {
            var received = ByteBuffer()
            while var bytes = try await self.iterator.next() {
                if self.record { self.log.append((.server, bytes)) }
                received.writeBuffer(&bytes)
            }
            return received
        }
    }

    /// Connects, reads the greeting, runs `body`, and closes. `prepare` may add handlers (TLS) to the channel.
    public static func withSession<T: Sendable>(
        host: String,
        port: Int,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        record: Bool = false,
        prepare: (@Sendable (any Channel) throws -> Void)? = nil,
        _ body: (inout Session) async throws -> T
    ) async throws -> T {
        let channel = try await ClientBootstrap(group: group)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A TLS handler, say, in front of what the session reads.
                    try prepare?(channel)
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var session = Session(iterator: inbound.makeAsyncIterator(), outbound: outbound, record: record)
            session.greeting = try await session.readReplies()
            return try await body(&session)
        }
    }
}
