import Foundation
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO
import PopgateTestSupport
import Testing

@testable import POP3Server

/// The embedded server on a loopback port, driven by real clients: the project's own, curl and poplib.
@Suite("Embedded POP3 server", .timeLimit(.minutes(1)))
struct EmbeddedServerTests {
    static func withServer<T: Sendable>(
        users: [String: String] = ["alice": "wonderland"],
        _ body: (EmbeddedPOP3Server) async throws -> T
    ) async throws -> T {
        var configuration = EmbeddedPOP3Server.Configuration()
        configuration.users = users
        let server = try await EmbeddedPOP3Server.start(configuration)
        do {
            let result = try await body(server)
            try await server.stop()
            return result
        } catch {
            try? await server.stop()
            throw error
        }
    }

    @Test("a full session: login, STAT, LIST, RETR delivers the stuffed message, QUIT")
    func session() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            let sample = SampleMessages.generated()[1]
            let log = try await POP3Client.withSession(host: "127.0.0.1", port: server.port, record: true) {
                (s: inout POP3Client.Session) async throws in
                #expect(s.greeting.firstLine.hasPrefix("+OK popgate embedded POP3 server ready <"))
                #expect(try await s.send("USER alice").isOK)
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(
                    try await s.send("STAT").firstLine
                        == "+OK 3 \(SampleMessages.generated().reduce(0) { $0 + $1.size })"
                )
                let retr = try await s.send("RETR 2")
                var expected = ByteBuffer(string: "+OK \(sample.size) octets\r\n")
                DotStuffing.writeBody(sample.bytes, into: &expected)
                #expect(retr.bytes == expected)
                #expect(retr.text.contains("\r\n..signature\r\n"))
                #expect(try await s.send("QUIT").isOK)
                _ = try await s.readUntilClosed()
                return s.log.map { Replay.Chunk(side: $0.side, bytes: $0.bytes) }
            }
            // The live session, replayed byte by byte, reads the same.
            let whole = Replay.events(log, byteByByte: false)
            #expect(whole == Replay.events(log, byteByByte: true))
            #expect(whole.contains { if case .bodyEnd = $0 { true } else { false } })
        }
    }

    @Test("commands in the wrong state, malformed and unknown ones get -ERR and the session goes on")
    func refusals() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                #expect(try await s.send("STAT").firstLine.hasPrefix("-ERR"))
                #expect(try await s.send("RETR").firstLine.hasPrefix("-ERR"))
                #expect(try await s.send("HELO x").firstLine.hasPrefix("-ERR unknown command"))
                #expect(try await s.send("PASS wonderland").firstLine == "-ERR USER first")
                #expect(try await s.send("USER alice").isOK)
                #expect(try await s.send("PASS nope").firstLine == "-ERR [AUTH] invalid user name or password")
                #expect(try await s.send("USER alice").isOK)
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(try await s.send("USER alice").firstLine.hasPrefix("-ERR"))
                #expect(try await s.send("RETR 9").firstLine.hasPrefix("-ERR no such message"))
                #expect(try await s.send("NOOP").isOK)
            }
        }
    }

    @Test("an over-long line gets -ERR and the next command is served")
    func overLong() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                let long = try await s.send("USER " + String(repeating: "x", count: 5000))
                #expect(long.firstLine.hasPrefix("-ERR line of 5007 octets is too long"))
                #expect(
                    long.events.contains { if case .anomaly(let a) = $0 { a.rule == .commandLength } else { false } }
                )
                #expect(try await s.send("NOOP").firstLine.hasPrefix("-ERR"))
                #expect(try await s.send("CAPA").isOK)
            }
        }
    }

    @Test("a second session on a locked maildrop gets -ERR [IN-USE]")
    func lock() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (first: inout POP3Client.Session) async throws in
                #expect(try await first.send("USER alice").isOK)
                #expect(try await first.send("PASS wonderland").isOK)
                try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                    (second: inout POP3Client.Session) async throws in
                    #expect(try await second.send("USER alice").isOK)
                    #expect(try await second.send("PASS wonderland").firstLine.hasPrefix("-ERR [IN-USE]"))
                }
                #expect(try await first.send("QUIT").isOK)
            }
        }
    }

    @Test("DELE is committed by QUIT and discarded when the client vanishes")
    func commitOnlyAtQuit() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                _ = try await s.send("PASS wonderland")
                #expect(try await s.send("DELE 1").isOK)
                #expect(try await s.send("RETR 1").firstLine == "-ERR message 1 already deleted")
            }
            // The connection closed without QUIT: nothing was removed, and the lock is free again.
            // Under a loaded machine the close can take a while to reach the server; wait up to 30 s.
            let deadline = ContinuousClock.now + .seconds(30)
            while server.store.isLocked("alice"), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(!server.store.isLocked("alice"))
            #expect(server.store.messages(of: "alice").count == 3)
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(try await s.send("DELE 1").isOK)
                #expect(try await s.send("QUIT").firstLine.contains("2 messages left"))
            }
            #expect(server.store.messages(of: "alice").map(\.uniqueID) == ["popgate-sample-2", "popgate-sample-3"])
        }
    }

    @Test("APOP with the right digest logs in; AUTH PLAIN works with and without an initial response; * cancels")
    func apopAndSASL() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                let stamp = try #require(s.machine.greetingTimestamp)
                #expect(
                    try await s.send("APOP alice 0123456789abcdef0123456789abcdef").firstLine.hasPrefix("-ERR [AUTH]")
                )
                #expect(try await s.send("APOP alice \(APOP.digest(timestamp: stamp, secret: "wonderland"))").isOK)
                _ = try await s.send("QUIT")
            }
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                #expect(try await s.send("AUTH PLAIN").firstLine == "+ ")
                #expect(try await s.send("*").firstLine == "-ERR AUTH cancelled")
                #expect(try await s.send("AUTH PLAIN").firstLine == "+ ")
                #expect(try await s.send("AGFsaWNlAHdvbmRlcmxhbmQ=").isOK)
                _ = try await s.send("QUIT")
            }
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                #expect(try await s.send("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=").isOK)
                _ = try await s.send("QUIT")
            }
        }
    }

    @Test("AUTH LOGIN: user name and password each after their challenge; a wrong password is refused")
    func authLogin() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                #expect(try await s.send("AUTH LOGIN").firstLine == "+ VXNlcm5hbWU6")
                #expect(try await s.send("YWxpY2U=").firstLine == "+ UGFzc3dvcmQ6")
                #expect(try await s.send("bm90LWl0").firstLine.hasPrefix("-ERR [AUTH]"))
                // An initial response carries the user name.
                #expect(try await s.send("AUTH LOGIN YWxpY2U=").firstLine == "+ UGFzc3dvcmQ6")
                #expect(try await s.send("d29uZGVybGFuZA==").isOK)
                #expect(try await s.send("STAT").firstLine.hasPrefix("+OK 3 "))
                _ = try await s.send("QUIT")
            }
            // poplib has no AUTH; curl picks LOGIN when the server offers only LOGIN-compatible choices.
            let list = try await runTool(
                "curl",
                [
                    "-s", "--max-time", "10", "--login-options", "AUTH=LOGIN",
                    "pop3://alice:wonderland@127.0.0.1:\(server.port)/",
                ]
            )
            #expect(list.split(separator: "\r\n").count == 3)
        }
    }

    @Test("pipelined commands are answered in order")
    func pipelining() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            try await POP3Client.withSession(host: "127.0.0.1", port: server.port) {
                (s: inout POP3Client.Session) async throws in
                let reply = try await s.sendRaw(
                    ByteBuffer(string: "USER alice\r\nPASS wonderland\r\nSTAT\r\nLIST 1\r\nNOOP\r\n")
                )
                let lines = reply.text.split(separator: "\r\n").map(String.init)
                #expect(lines.count == 5)
                #expect(lines[2].hasPrefix("+OK 3 "))
                #expect(lines[3].hasPrefix("+OK 1 "))
                #expect(lines[4] == "+OK")
            }
        }
    }

    @Test("curl lists and retrieves through pop3://")
    func curl() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            let list = try await runTool(
                "curl",
                ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(server.port)/"]
            )
            #expect(list.split(separator: "\r\n").count == 3)
            let message = try await runTool(
                "curl",
                ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(server.port)/2"]
            )
            #expect(message.contains("\r\n.signature\r\n"))
            #expect(!message.contains("..signature"))
        }
    }

    @Test("Python's poplib logs in with USER/PASS and with APOP, and retrieves every message")
    func poplib() async throws {
        try await Self.withServer { (server: EmbeddedPOP3Server) async throws in
            let script = """
                import poplib, sys
                for apop in (False, True):
                    p = poplib.POP3('127.0.0.1', \(server.port), timeout=10)
                    if apop:
                        p.apop('alice', 'wonderland')
                    else:
                        p.user('alice'); p.pass_('wonderland')
                    count, size = p.stat()
                    lines = [len(p.retr(i + 1)[1]) for i in range(count)]
                    print(count, size, lines, p.capa().get('SASL'))
                    p.quit()
                """
            let output = try await runTool("python3", ["-c", script])
            let expected = SampleMessages.generated()
            let sizes = expected.reduce(0) { $0 + $1.size }
            #expect(
                output.split(separator: "\n").allSatisfy {
                    $0.hasPrefix("3 \(sizes) [") && $0.hasSuffix("['PLAIN', 'LOGIN']")
                }
            )
            #expect(output.split(separator: "\n").count == 2)
        }
    }
}

/// Replays a recorded session through a fresh machine.
enum Replay {
    struct Chunk: Sendable {
        var side: Side
        var bytes: ByteBuffer
    }

    static func events(_ chunks: [Chunk], byteByByte: Bool) -> [ConversationEvent] {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        for chunk in chunks {
            let pieces = byteByByte ? chunk.bytes.readableBytesView.map { ByteBuffer(bytes: [$0]) } : [chunk.bytes]
            for piece in pieces {
                if chunk.side == .client {
                    machine.clientSent(piece, into: &events)
                } else {
                    machine.serverSent(piece, into: &events)
                }
            }
        }
        return events.mergingChunks()
    }
}
