import Foundation
import NIOCore
import NIOPosix
import POP3Core
import POP3NIO
import PopgateTestSupport
import Testing

@testable import POP3Relay

/// The gateway in front of a real Dovecot, driven by curl, Python's poplib and the project's client.
@Suite("Relay in front of Dovecot", .timeLimit(.minutes(3)))
struct RelayDovecotTests {
    static let messages: [[UInt8]] = [
        Array(
            "From: ada@example.org\r\nSubject: one\r\n\r\nHello.\r\n.A line that begins with a dot\r\n..two dots\r\n"
                .utf8
        ),
        Array("From: bob@example.org\r\nSubject: two\r\n\r\n8-bit body: caf\u{E9}\r\n".utf8),
        Array(
            ("From: carol@example.org\r\nSubject: three\r\n\r\n"
                + String(repeating: "0123456789abcdef\r\n", count: 20_000)).utf8
        ),
    ]

    static func withStack<T: Sendable>(
        adjust: (inout RelayConfiguration) -> Void = { _ in },
        _ body: (Dovecot, Gateway) async throws -> T
    ) async throws -> T {
        let dovecot = try Dovecot(messages: Self.messages)
        let gateway: Gateway
        do {
            gateway = try await Gateway.start(upstreamPort: dovecot.port, adjust: adjust)
        } catch {
            await dovecot.stop()
            throw error
        }
        do {
            let result = try await body(dovecot, gateway)
            await gateway.stop()
            await dovecot.stop()
            return result
        } catch {
            // What the gateway and Dovecot saw explains a failure seen only under load.
            let endings = gateway.sink.ended.withLockedValue { $0.mapValues(\.ending) }
            Issue.record("sessions ended: \(endings)\nDovecot's log:\n\(dovecot.logTail())")
            await gateway.stop()
            await dovecot.stop()
            throw error
        }
    }

    @Test("curl lists and retrieves through the gateway exactly what it gets directly")
    func curl() async throws {
        try await Self.withStack { dovecot, gateway in
            for path in ["", "1", "2", "3"] {
                let via = try await runTool(
                    "curl",
                    ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(gateway.port)/\(path)"]
                )
                let direct = try await runTool(
                    "curl",
                    ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(dovecot.port)/\(path)"]
                )
                #expect(via == direct, "path /\(path)")
                #expect(!via.isEmpty)
            }
        }
    }

    @Test("the same pipelined commands get byte-identical replies through the gateway and directly")
    func byteIdentical() async throws {
        try await Self.withStack { dovecot, gateway in
            let script =
                "USER alice\r\nPASS wonderland\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nTOP 1 0\r\nNOOP\r\n"
            func run(_ port: Int) async throws -> ByteBuffer {
                try await POP3Client.withSession(host: "127.0.0.1", port: port) {
                    (s: inout POP3Client.Session) async throws in
                    let replies = try await s.sendRaw(ByteBuffer(string: script))
                    _ = try await s.send("QUIT")
                    return replies.bytes
                }
            }
            let via = try await run(gateway.port)
            let direct = try await run(dovecot.port)
            #expect(via == direct)
            #expect(String(buffer: via).contains("\r\n..A line that begins with a dot\r\n"))
            #expect(via.readableBytes > 360_000)
            // The machine read the session the way it was: ten commands, three RETR bodies, no pipelining finding
            // beyond R30 (Dovecot advertises PIPELINING, but the client never asked with CAPA).
            await gateway.sink.waitForEnded(1)
            let events = gateway.sink.allEvents
            let bodies = events.compactMap { if case .bodyEnd(let b) = $0 { b } else { nil } }
            #expect(bodies.filter { $0.inResponseTo == "RETR" }.count == 3)
            let retrBodies = bodies.filter { $0.inResponseTo == "RETR" }
            #expect(retrBodies.allSatisfy { $0.complete })
        }
    }

    @Test("poplib retrieves every message identically through the gateway, logs in with APOP, and deletes with QUIT")
    func poplib() async throws {
        try await Self.withStack { dovecot, gateway in
            let script = """
                import poplib, sys, hashlib
                def fetch(port, apop):
                    p = poplib.POP3('127.0.0.1', port, timeout=10)
                    if apop: p.apop('alice', 'wonderland')
                    else: p.user('alice'); p.pass_('wonderland')
                    count, _ = p.stat()
                    digest = hashlib.sha256(b''.join(b'\\n'.join(p.retr(i + 1)[1]) for i in range(count))).hexdigest()
                    p.quit()
                    return count, digest
                via, direct = fetch(\(gateway.port), False), fetch(\(dovecot.port), False)
                apop = fetch(\(gateway.port), True)
                print(via == direct == apop, via[0])
                p = poplib.POP3('127.0.0.1', \(gateway.port), timeout=10)
                p.user('alice'); p.pass_('wonderland'); p.dele(1); p.quit()
                """
            let output = try await runTool("python3", ["-c", script])
            #expect(output == "True 3\n")
            #expect(dovecot.messageCount() == 2)
        }
    }

    @Test("a client that drops after DELE leaves the message on the server: no QUIT goes upstream")
    func clientDrop() async throws {
        try await Self.withStack { dovecot, gateway in
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(try await s.send("DELE 1").isOK)
                #expect(try await s.send("DELE 2").isOK)
            }
            await gateway.sink.waitForEnded(1)
            // Dovecot would have removed them at QUIT; a dropped connection commits nothing.
            try await Task.sleep(for: .milliseconds(300))
            #expect(dovecot.messageCount() == 3)
            #expect(gateway.sink.anomalies.contains { $0.rule == .update && $0.side == .client })
            let ending = gateway.sink.ended.withLockedValue { $0.values.first?.ending }
            #expect(ending == SessionEnd.clientVanished.rawValue, "\(gateway.sink.unended)")
        }
    }

    @Test("a client that drops during login or in the middle of a RETR: no QUIT upstream, other sessions unharmed")
    func dropsAnywhere() async throws {
        try await Self.withStack { dovecot, gateway in
            // During login.
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                #expect(try await s.send("USER alice").isOK)
            }
            // In the middle of a 360 kB RETR, after marking message 2.
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(try await s.send("DELE 2").isOK)
                try await s.outbound.write(ByteBuffer(string: "RETR 3\r\n"))
                _ = try await s.iterator.next()
            }
            await gateway.sink.waitForEnded(2)
            try await Task.sleep(for: .milliseconds(300))
            #expect(dovecot.messageCount() == 3)
            let endings = gateway.sink.ended.withLockedValue { $0.values.compactMap(\.ending) }
            #expect(
                endings == [SessionEnd.clientVanished.rawValue, SessionEnd.clientVanished.rawValue],
                "\(gateway.sink.unended)"
            )
            // The next session is served as usual.
            let list = try await runTool(
                "curl",
                ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(gateway.port)/"]
            )
            #expect(list.split(separator: "\r\n").count == 3)
        }
    }

    @Test("an over-long line and a malformed line get the gateway's -ERR and the session goes on")
    func badLines() async throws {
        try await Self.withStack { _, gateway in
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                let long = try await s.send("LIST " + String(repeating: "9", count: 1000))
                #expect(long.firstLine == "-ERR line of 1007 octets is too long; the limit is 255 (RFC 2449 section 4)")
                let control = try await s.send("NO\u{7}OP")
                #expect(control.firstLine.hasPrefix("-ERR control characters"))
                #expect(try await s.send("STAT").firstLine.hasPrefix("+OK 3 "))
                // Pipelined around a refused line, replies keep the commands' order.
                let mixed = try await s.sendRaw(
                    ByteBuffer(string: "STAT\r\n" + String(repeating: "x", count: 300) + "\r\nNOOP\r\n")
                )
                let lines = mixed.text.split(separator: "\r\n").map(String.init)
                #expect(lines.count == 3)
                #expect(lines[0].hasPrefix("+OK 3 "))
                #expect(lines[1].hasPrefix("-ERR line of 302 octets"))
                #expect(lines[2].hasPrefix("+OK"))
                _ = try await s.send("QUIT")
            }
            await gateway.sink.waitForEnded(1)
            let replies = gateway.sink.allEvents.compactMap { if case .reply(let r) = $0 { r } else { nil } }
            #expect(replies.filter { $0.side == .gateway }.count == 3)
            #expect(gateway.sink.anomalies.contains { $0.rule == .commandLength })
        }
    }

    @Test("an idle session is closed on both sides without QUIT, so DELE marks are not committed")
    func idleTimeout() async throws {
        // Long enough that a login slowed by a loaded machine is not mistaken for idleness; the login and DELE
        // go in one write, so a test task the loaded machine stalls between commands cannot look idle (CI saw
        // the session closed after USER, six seconds before this task sent PASS).
        let adjust: (inout RelayConfiguration) -> Void = { $0.idleTimeout = .seconds(8) }
        try await Self.withStack(adjust: adjust) { dovecot, gateway in
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                let replies = try await s.sendRaw(ByteBuffer(string: "USER alice\r\nPASS wonderland\r\nDELE 1\r\n"))
                #expect(
                    replies.text.split(separator: "\r\n").filter { $0.hasPrefix("+OK") }.count == 3,
                    "\(replies.text)"
                )
                let rest = try await s.readUntilClosed()
                #expect(rest.readableBytes == 0)
            }
            await gateway.sink.waitForEnded(1)
            try await Task.sleep(for: .milliseconds(300))
            #expect(dovecot.messageCount() == 3)
            let ending = gateway.sink.ended.withLockedValue { $0.values.first?.ending }
            #expect(ending == SessionEnd.idleTimeout.rawValue)
        }
    }

    @Test("Dovecot killed mid-session: the client is told or disconnected, and the session records it")
    func upstreamKilled() async throws {
        try await Self.withStack { dovecot, gateway in
            try await POP3Client.withSession(host: "127.0.0.1", port: gateway.port) {
                (s: inout POP3Client.Session) async throws in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(dovecot.killSessions() == 1)
                // Whatever was pending got -ERR [SYS/TEMP]; then the gateway closes the connection.
                let rest = try await s.readUntilClosed()
                #expect(rest.readableBytes == 0 || String(buffer: rest).hasPrefix("-ERR [SYS/TEMP]"))
            }
            await gateway.sink.waitForEnded(1)
            let ending = gateway.sink.ended.withLockedValue { $0.values.first?.ending }
            #expect(ending == SessionEnd.upstreamClosed.rawValue)
            #expect(gateway.sink.anomalies.contains { $0.side == .server && $0.rule == .unexpectedServerData })
        }
    }

    @Test("200 concurrent sessions through the gateway all log in, retrieve and quit")
    func concurrency() async throws {
        try await Self.withStack { _, gateway in
            let port = gateway.port
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<200 {
                    group.addTask {
                        try await POP3Client.withSession(host: "127.0.0.1", port: port) {
                            (s: inout POP3Client.Session) async throws in
                            _ = try await s.send("USER alice")
                            guard try await s.send("PASS wonderland").isOK else { return false }
                            let retr = try await s.send("RETR 1")
                            let quit = try await s.send("QUIT")
                            return retr.isOK && retr.text.contains("..two dots") && quit.isOK
                        }
                    }
                }
                var all: [Bool] = []
                for try await result in group { all.append(result) }
                return all
            }
            #expect(results.count == 200)
            #expect(results.allSatisfy { $0 })
            await gateway.sink.waitForEnded(200)
            #expect(gateway.sink.ended.withLockedValue { $0.count } == 200)
        }
    }

    @Test("transcript files: text and JSON lines per session, credentials masked, bodies summarised")
    func transcripts() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-tr-\(UUID().uuidString.prefix(8))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let adjust: (inout RelayConfiguration) -> Void = { $0.transcripts = directory }
        try await Self.withStack(adjust: adjust) { _, gateway in
            _ = try await runTool(
                "curl",
                ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(gateway.port)/1"]
            )
            await gateway.sink.waitForEnded(1)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files.count == 2)
        let jsonl = try String(
            contentsOfFile: directory + "/" + files.first { $0.hasSuffix(".jsonl") }!,
            encoding: .utf8
        )
        let text = try String(contentsOfFile: directory + "/" + files.first { $0.hasSuffix(".txt") }!, encoding: .utf8)
        let records = try jsonl.split(separator: "\n").map {
            try JSONDecoder().decode(TranscriptRecord.self, from: Data($0.utf8))
        }
        #expect(records.first?.kind == "session-start" && records.last?.kind == "session-end")
        #expect(records.first?.client?.hasPrefix("127.0.0.1:") == true)
        #expect(records.contains { $0.kind == "body" && $0.verb == "RETR" && $0.octets ?? 0 > 0 })
        #expect(!records.contains { $0.kind == "body-chunk" })
        for secret in ["wonderland", "AGFsaWNlAHdvbmRlcmxhbmQ="] {
            #expect(!jsonl.contains(secret))
            #expect(!text.contains(secret))
        }
        #expect(!text.contains("A line that begins with a dot"))
    }

    @Test("--transcript-bodies puts message content in the transcripts")
    func transcriptBodies() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-trb-\(UUID().uuidString.prefix(8))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let adjust: (inout RelayConfiguration) -> Void = {
            $0.transcripts = directory
            $0.transcriptBodies = true
        }
        try await Self.withStack(adjust: adjust) { _, gateway in
            _ = try await runTool(
                "curl",
                ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(gateway.port)/1"]
            )
            await gateway.sink.waitForEnded(1)
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        let text = try String(contentsOfFile: directory + "/" + files.first { $0.hasSuffix(".txt") }!, encoding: .utf8)
        let jsonl = try String(
            contentsOfFile: directory + "/" + files.first { $0.hasSuffix(".jsonl") }!,
            encoding: .utf8
        )
        #expect(text.contains("S|  ..A line that begins with a dot"))
        #expect(jsonl.contains("\"kind\":\"body-chunk\""))
    }
}
