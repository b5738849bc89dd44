import NIOCore
import NIOPosix
import POP3Core
import POP3Server

/// A scripted POP3 client that reads the server through its own conversation machine, so it knows when
/// each reply, multi-line or not, has ended.
struct DemoClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// One command of the script; it may depend on what the session showed so far (the APOP timestamp).
    typealias Step = @Sendable (ConversationMachine) -> String

    /// Every RFC 1939 command and CAPA, with one deliberate mistake (STAT before login) and a failed PASS.
    static func script(user: String, password: String) -> [Step] {
        [
            { _ in "CAPA" },
            { _ in "STAT" },  // the mistake: TRANSACTION-only, sent in AUTHORIZATION
            { _ in "USER \(user)" },
            { _ in "PASS not-the-password" },
            { machine in "APOP \(user) \(APOP.digest(timestamp: machine.greetingTimestamp ?? "", secret: password))" },
            { _ in "STAT" },
            { _ in "LIST" },
            { _ in "LIST 2" },
            { _ in "UIDL" },
            { _ in "UIDL 1" },
            { _ in "TOP 1 2" },
            { _ in "RETR 2" },
            { _ in "DELE 1" },
            { _ in "NOOP" },
            { _ in "RSET" },
            { _ in "DELE 3" },
            { _ in "QUIT" },
        ]
    }

    /// Connects, runs `steps`, and returns when the server has closed the connection.
    static func run(host: String, port: Int, steps: [Step], group: any EventLoopGroup) async throws {
        let channel = try await ClientBootstrap(group: group)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            var machine = ConversationMachine()
            try await Self.awaitReply(&machine, &iterator)
            for step in steps {
                let line = ByteBuffer(string: step(machine) + "\r\n")
                _ = machine.clientSent(line)
                try await outbound.write(line)
                try await Self.awaitReply(&machine, &iterator)
            }
            // Read until the server closes after QUIT.
            while try await iterator.next() != nil {}
        }
    }

    private static func awaitReply(
        _ machine: inout ConversationMachine,
        _ iterator: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    ) async throws {
        while machine.state == .greeting || machine.awaitingReply {
            guard let bytes = try await iterator.next() else {
                throw Failure(description: "the server closed the connection in the middle of the script")
            }
            _ = machine.serverSent(bytes)
        }
    }
}
