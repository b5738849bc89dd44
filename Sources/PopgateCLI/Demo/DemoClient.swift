import NIOCore
import POP3Core
import POP3NIO
import POP3Server

/// The demo's scripted session.
enum DemoClient {
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

    /// Runs `steps` and returns when the server has closed the connection.
    static func run(host: String, port: Int, steps: [Step], group: any EventLoopGroup) async throws {
        try await POP3Client.withSession(host: host, port: port, group: group) { session in
            for step in steps {
                _ = try await session.send(step(session.machine))
            }
            _ = try await session.readUntilClosed()
        }
    }
}
