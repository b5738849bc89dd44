import Foundation
import PopgateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `popgate serve --rules` in front of a real Dovecot, with clients bound to 127.0.0.2 and 127.0.0.3 (all of
/// 127.0.0.0/8 is this machine's) so that one is allowed and one is not.
@Suite("popgate serve --rules, end to end", .timeLimit(.minutes(3)))
struct ServeRulesTests {
    /// A gateway with `rules` in front of `dovecot`; its rules file, its log, and a stop that cleans up.
    struct Gateway {
        let process: ChildProcess
        let port: Int
        let rules: String
        let log: String

        init(_ rules: String, dovecot: Dovecot, extra: [String] = []) async throws {
            self.rules = ServeProcessTests.temporary("rules") + ".rules"
            self.log = ServeProcessTests.temporary("rules-log")
            try rules.write(toFile: self.rules, atomically: true, encoding: .utf8)
            (self.process, self.port) = try await ServeProcessTests.serveOnAnyPort(
                ["--upstream", "127.0.0.1:\(dovecot.port)", "--rules", self.rules] + extra,
                log: self.log
            )
        }

        var output: String { (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? "" }

        func stop() async {
            await self.process.stop()
            try? FileManager.default.removeItem(atPath: self.rules)
            try? FileManager.default.removeItem(atPath: self.log)
        }

        /// curl from `source`: its output and exit code.
        func curl(
            from source: String,
            user: String = "alice:wonderland",
            path: String = "/"
        ) async throws -> (
            String, Int
        ) {
            let output = try await runShell(
                "curl -sS --max-time 10 --interface \(source) -u \(user) pop3://127.0.0.1:\(self.port)\(path); echo \"exit=$?\""
            )
            let code = output.components(separatedBy: "exit=").last.flatMap { Int($0.filter(\.isNumber)) } ?? -1
            return (output, code)
        }
    }

    /// Dovecot's log lines that say a client disconnected before logging in: one per connection it saw.
    static func dovecotConnections(_ dovecot: Dovecot) -> Int {
        dovecot.logTail(1 << 20).components(separatedBy: "\n").filter { $0.contains("Disconnected") }.count
    }

    @Test("allowed from 127.0.0.2, refused from 127.0.0.3 with -ERR [SYS/PERM] and no upstream connection")
    func allowAndDeny() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let transcripts = ServeProcessTests.temporary("rules-tr")
        defer { try? FileManager.default.removeItem(atPath: transcripts) }
        let gateway = try await Gateway(
            "allow from 127.0.0.2\ndeny from any\n",
            dovecot: dovecot,
            extra: ["--transcripts", transcripts]
        )
        let (listing, allowed) = try await gateway.curl(from: "127.0.0.2")
        #expect(allowed == 0 && listing.hasPrefix("1 "), "\(listing)")
        let before = Self.dovecotConnections(dovecot)
        let socket = try RawSocket(port: gateway.port, from: "127.0.0.3")
        let refusal = await socket.readAll(seconds: 5)
        socket.close()
        #expect(refusal == "-ERR [SYS/PERM] connections from 127.0.0.3 are not accepted here\r\n")
        let (_, denied) = try await gateway.curl(from: "127.0.0.3")
        #expect(denied != 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(Self.dovecotConnections(dovecot) == before, "Dovecot saw a connection for a refused client")
        #expect(
            gateway.output.contains(
                "refused client=127.0.0.3: connections from 127.0.0.3 are not accepted here (\(gateway.rules):2)"
            )
        )
        await gateway.stop()
        // The refused session's transcript: the gateway's decision and its reply, no fault of a server's.
        let files = try FileManager.default.contentsOfDirectory(atPath: transcripts).filter { $0.hasSuffix(".jsonl") }
        let refusedSession = try files.map { try String(contentsOfFile: transcripts + "/" + $0, encoding: .utf8) }
            .first { $0.contains("127.0.0.3") }
        let events = try #require(refusedSession, "no transcript for the refused client")
        #expect(events.contains("by the rule at \(gateway.rules):2"))
        #expect(events.contains("\"side\":\"gateway\"") && events.contains("\"status\":\"-ERR\""))
        #expect(!events.contains("\"kind\":\"anomaly\""), "\(events)")
        await dovecot.stop()
    }

    @Test("the sixth connection in a minute is refused with -ERR [SYS/TEMP]; another address still gets in")
    func sixthConnection() async throws {
        let dovecot = try Dovecot()
        let gateway = try await Gateway("limit connections 5 per minute per client-ip\n", dovecot: dovecot)
        for _ in 0..<5 {
            let socket = try RawSocket(port: gateway.port, from: "127.0.0.2")
            #expect(await socket.readUntil("\r\n").hasPrefix("+OK"))
            socket.send("QUIT\r\n")
            _ = await socket.readAll(seconds: 5)
            socket.close()
        }
        let sixth = try RawSocket(port: gateway.port, from: "127.0.0.2")
        #expect(
            await sixth.readAll(seconds: 5)
                == "-ERR [SYS/TEMP] too many connections from 127.0.0.2; try again later\r\n"
        )
        sixth.close()
        let other = try RawSocket(port: gateway.port, from: "127.0.0.3")
        #expect(await other.readUntil("\r\n").hasPrefix("+OK"))
        other.close()
        await gateway.stop()
        await dovecot.stop()
    }

    @Test("five wrong passwords (curl) block the address; the right one is then refused and never reaches Dovecot")
    func blockAfterFailures() async throws {
        let dovecot = try Dovecot()
        let gateway = try await Gateway(
            "limit auth-failures 5 per 10 minutes per client-ip then block 15 minutes\n",
            dovecot: dovecot
        )
        for _ in 0..<5 {
            let (_, code) = try await gateway.curl(from: "127.0.0.2", user: "alice:wrong")
            #expect(code == 67, "curl should report a denied login")
        }
        #expect(try await ServeProcessTests.waitForLog(gateway.log, "blocking client=127.0.0.2 for 15 minute(s)"))
        // The right password now: the gateway answers, Dovecot sees no login and no further attempt.
        let socket = try RawSocket(port: gateway.port, from: "127.0.0.2")
        _ = await socket.readUntil("\r\n")
        socket.send("USER alice\r\nPASS wonderland\r\n")
        let replies = await socket.readUntil("minutes", seconds: 5)
        #expect(replies.contains("-ERR [SYS/TEMP] login refused for 15 more minutes after repeated failed logins"))
        socket.send("QUIT\r\n")
        _ = await socket.readAll(seconds: 5)
        socket.close()
        let (_, code) = try await gateway.curl(from: "127.0.0.2")
        #expect(code == 67)
        try await Task.sleep(for: .milliseconds(300))
        let log = dovecot.logTail(1 << 20)
        #expect(!log.contains("Login: user=<alice>"), "Dovecot logged a login during the block")
        #expect(log.components(separatedBy: "\n").filter { $0.contains("auth failed") }.count == 5)
        // Another address logs in.
        let (listing, other) = try await gateway.curl(from: "127.0.0.3")
        #expect(other == 0, "\(listing)")
        // fail2ban's failregex "auth-failure client=<HOST>" finds the address, five times, without a password.
        let lines = gateway.output.components(separatedBy: "\n").filter {
            $0.contains("auth-failure client=127.0.0.2 ")
        }
        #expect(lines.count == 5)
        #expect(!gateway.output.contains("wrong") && !gateway.output.contains("wonderland"))
        await gateway.stop()
        await dovecot.stop()
    }

    @Test("deny command DELE: in a pipeline, the gateway's -ERR comes in its turn and the message stays")
    func deniedDELEInPipeline() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway("deny command DELE for user ali*\n", dovecot: dovecot)
        let socket = try RawSocket(port: gateway.port, from: "127.0.0.2")
        _ = await socket.readUntil("\r\n")
        socket.send("USER alice\r\nPASS wonderland\r\nDELE 1\r\nSTAT\r\nQUIT\r\n")
        let replies = await socket.readAll(seconds: 10).components(separatedBy: "\r\n").filter { !$0.isEmpty }
        socket.close()
        #expect(replies.count == 5, "\(replies)")
        if replies.count == 5 {
            #expect(replies[0].hasPrefix("+OK") && replies[1].hasPrefix("+OK"))
            #expect(replies[2] == "-ERR DELE is not allowed here")
            #expect(replies[3].hasPrefix("+OK 1 "))
            #expect(replies[4].hasPrefix("+OK"))
        }
        #expect(dovecot.messageCount() == 1)
        #expect(gateway.output.contains("refused DELE client=127.0.0.2: deny command DELE (\(gateway.rules):1)"))
        await gateway.stop()
        await dovecot.stop()
    }

    @Test("reload with 50 sessions open: on file change and on SIGHUP; none dropped; a bad file keeps the rules")
    func reloadUnderLoad() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway("limit sessions 100 concurrent per client-ip\n", dovecot: dovecot)
        var sockets: [RawSocket] = []
        for _ in 0..<50 {
            let socket = try RawSocket(port: gateway.port, from: "127.0.0.2")
            _ = await socket.readUntil("\r\n")
            socket.send("USER alice\r\nPASS wonderland\r\n")
            sockets.append(socket)
        }
        for socket in sockets { #expect(await socket.readUntil("Logged in", seconds: 5).contains("+OK Logged in")) }
        // A change to the file, no signal: new sessions from 127.0.0.4 are refused.
        try "deny from 127.0.0.4\nlimit sessions 100 concurrent per client-ip\n".write(
            toFile: gateway.rules,
            atomically: true,
            encoding: .utf8
        )
        #expect(try await ServeProcessTests.waitForLog(gateway.log, "reloaded the rules in \(gateway.rules)"))
        let refused = try RawSocket(port: gateway.port, from: "127.0.0.4")
        #expect(await refused.readAll(seconds: 5).hasPrefix("-ERR [SYS/PERM]"))
        refused.close()
        // A file with an error, then SIGHUP: every error logged, the rules in force kept.
        try "deny from 127.0.0.4\nlimit sessions many concurrent per client-ip\n".write(
            toFile: gateway.rules,
            atomically: true,
            encoding: .utf8
        )
        gateway.process.signal(SIGHUP)
        #expect(try await ServeProcessTests.waitForLog(gateway.log, "\(gateway.rules):2:16: expected a count"))
        #expect(try await ServeProcessTests.waitForLog(gateway.log, "the rules in force are kept"))
        let still = try RawSocket(port: gateway.port, from: "127.0.0.4")
        #expect(await still.readAll(seconds: 5).hasPrefix("-ERR [SYS/PERM]"))
        still.close()
        // Every open session goes on, and ends as it should.
        for socket in sockets {
            socket.send("STAT\r\nQUIT\r\n")
            let replies = await socket.readAll(seconds: 10)
            #expect(replies.contains("+OK 1 ") && replies.hasSuffix("+OK Logging out.\r\n"), "\(replies)")
            socket.close()
        }
        #expect(!gateway.output.contains("upstream closed"))
        await gateway.stop()
        await dovecot.stop()
    }
}
