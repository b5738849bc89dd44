import Foundation
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import POP3NIO
import POP3Server
import PopgateTestSupport
import Testing

/// `popgate serve` as a process: exit codes, signals, memory.
@Suite("popgate serve process", .timeLimit(.minutes(3)))
struct ServeProcessTests {
    static func serve(_ arguments: [String], log: String) throws -> ChildProcess {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        return try ChildProcess(binary.path, ["serve"] + arguments, output: log)
    }

    /// Starts `popgate serve` listening on a port the kernel picks, and returns it with the port, read from the
    /// log. (A free port found beforehand can be taken by another test before the gateway binds it.)
    static func serveOnAnyPort(
        _ arguments: [String],
        log: String,
        listen: Bool = true
    ) async throws -> (ChildProcess, Int) {
        let process = try Self.serve((listen ? ["--listen", "127.0.0.1:0"] : []) + arguments, log: log)
        for _ in 0..<500 {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let range = output.range(of: "listening on 127.0.0.1:"),
                let port = Int(output[range.upperBound...].prefix { $0.isNumber })
            {
                return (process, port)
            }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        throw ChildProcess.Failure(description: "popgate serve did not report its port; its log:\n\(output)")
    }

    static func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("popgate-\(name)-\(UUID().uuidString.prefix(8))")
            .path
    }

    @Test("a bad config file: a message naming the key, exit code 2")
    func badConfig() async throws {
        let path = Self.temporary("bad") + ".yaml"
        let log = Self.temporary("bad-log")
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: log)
        }
        try "listeners:\n  - listen: 127.0.0.1:1\n    upstream: 127.0.0.1:99999\n".write(
            toFile: path,
            atomically: true,
            encoding: .utf8
        )
        let process = try Self.serve(["--config", path], log: log)
        #expect(await process.wait() == 2)
        let message = try String(contentsOfFile: log, encoding: .utf8)
        #expect(message.contains("listeners[0].upstream"))
        #expect(message.contains("the port must be a number from 1 to 65535"))
    }

    @Test("SIGTERM: no new sessions, the open one finishes within the grace period, transcripts flushed, exit 0")
    func gracefulShutdown() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let transcripts = Self.temporary("tr")
        let log = Self.temporary("log")
        defer {
            try? FileManager.default.removeItem(atPath: transcripts)
            try? FileManager.default.removeItem(atPath: log)
        }
        let (process, port) = try await Self.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)", "--transcripts", transcripts, "--grace", "20"],
            log: log
        )
        try await POP3Client.withSession(host: "127.0.0.1", port: port) { (s: inout POP3Client.Session) async throws in
            _ = try await s.send("USER alice")
            #expect(try await s.send("PASS wonderland").isOK)
            process.signal(SIGTERM)
            try await Task.sleep(for: .milliseconds(300))
            // The listener is closed…
            await #expect(throws: (any Error).self) {
                try await POP3Client.withSession(host: "127.0.0.1", port: port) { _ in }
            }
            // …and the open session still works.
            #expect(try await s.send("STAT").firstLine.hasPrefix("+OK 1 "))
            #expect(try await s.send("QUIT").isOK)
        }
        #expect(await process.wait(seconds: 10) == 0)
        let files = try FileManager.default.contentsOfDirectory(atPath: transcripts)
        let jsonl = try #require(files.first { $0.hasSuffix(".jsonl") })
        let lines = try String(contentsOfFile: transcripts + "/" + jsonl, encoding: .utf8).split(separator: "\n")
        #expect(lines.last?.contains("\"kind\":\"session-end\"") == true)
        let output = try String(contentsOfFile: log, encoding: .utf8)
        #expect(output.contains("session ended: the client quit"))
        #expect(!output.contains("wonderland"))
        await dovecot.stop()
    }

    @Test("--reuse-port: two gateways share one port and both serve; without it the second says the port is taken")
    func reusePort() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let logs = (0..<3).map { Self.temporary("reuse-\($0)") }
        defer { for log in logs { try? FileManager.default.removeItem(atPath: log) } }
        let upstream = ["--upstream", "127.0.0.1:\(dovecot.port)", "--log-level", "info"]
        let (first, port) = try await Self.serveOnAnyPort(upstream + ["--reuse-port"], log: logs[0])
        // Without the option a second gateway cannot have the port, and says why.
        let refused = try Self.serve(["--listen", "127.0.0.1:\(port)"] + upstream, log: logs[2])
        #expect(await refused.wait(seconds: 10) == 2)
        let message = try String(contentsOfFile: logs[2], encoding: .utf8)
        #expect(message.contains("cannot listen on 127.0.0.1:\(port): the address is in use"), "\(message)")
        #expect(message.contains("--reuse-port"))
        let second = try Self.serve(["--listen", "127.0.0.1:\(port)", "--reuse-port"] + upstream, log: logs[1])
        #expect(try await Self.waitForLog(logs[1], "listening on 127.0.0.1:\(port)"))
        // The kernel spreads connections by their addresses: 40 sessions from 40 ports reach both.
        for _ in 0..<40 {
            try await POP3Client.withSession(host: "127.0.0.1", port: port) { (s: inout POP3Client.Session) in
                _ = try await s.send("USER alice")
                #expect(try await s.send("PASS wonderland").isOK)
                #expect(try await s.send("QUIT").isOK)
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let ended = logs.prefix(2).map { log in
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").components(separatedBy: "session ended").count
                - 1
        }
        #expect(ended.reduce(0, +) == 40, "\(ended)")
        #expect(ended.allSatisfy { $0 > 0 }, "\(ended)")
        first.signal(SIGTERM)
        second.signal(SIGTERM)
        #expect(await first.wait(seconds: 10) == 0)
        #expect(await second.wait(seconds: 10) == 0)
        await dovecot.stop()
    }

    @Test("an address no interface has: exit 2, said in those words (not the socket call's text)")
    func addressNotHere() async throws {
        let log = Self.temporary("not-here")
        defer { try? FileManager.default.removeItem(atPath: log) }
        // 192.0.2.0/24 is for documentation: no interface here has it, so nothing ever listens on it.
        let process = try Self.serve(["--listen", "192.0.2.1:1110", "--upstream", "127.0.0.1:9"], log: log)
        #expect(await process.wait(seconds: 10) == 2)
        let message = try String(contentsOfFile: log, encoding: .utf8)
        #expect(message.contains("cannot listen on 192.0.2.1:1110: no interface of this machine has that address"))
        #expect(!message.contains("bind(descriptor"), "\(message)")
    }

    /// Waits until the log holds `text` (it is written as things happen).
    static func waitForLog(_ log: String, _ text: String) async throws -> Bool {
        for _ in 0..<250 {
            if ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains(text) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    @Test("SIGHUP reloads the configuration for new sessions, a bad one changes nothing, SIGUSR1/2 do no harm")
    func reload() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let path = Self.temporary("reload") + ".yaml"
        let log = Self.temporary("reload-log")
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: log)
        }
        func write(_ text: String) throws { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        let listener = "listeners:\n  - listen: 127.0.0.1:0\n    upstream: 127.0.0.1:\(dovecot.port)\n"
        try write(listener)
        let (process, port) = try await Self.serveOnAnyPort(["--config", path], log: log, listen: false)
        /// A new session that does not log in: cut at a login limit of 1 s, or not within 2 s.
        func cutForLogin() async throws -> Bool {
            let client = try RawSocket(port: port)
            defer { client.close() }
            return await client.readAll(seconds: 2).contains("-ERR a login must finish within 1 seconds")
        }
        try await POP3Client.withSession(host: "127.0.0.1", port: port) { (s: inout POP3Client.Session) async throws in
            _ = try await s.send("USER alice")
            #expect(try await s.send("PASS wonderland").isOK)
            #expect(try await cutForLogin() == false)

            // A new limit, and a listener that cannot change without a restart.
            try write(listener.replacingOccurrences(of: ":0\n", with: ":1\n") + "timeouts: { login: 1 }\n")
            process.signal(SIGHUP)
            #expect(try await Self.waitForLog(log, "listeners changed but are not reloaded"))
            #expect(try await cutForLogin())
            #expect(try await s.send("STAT").firstLine.hasPrefix("+OK 1 "))

            // A file that does not load: nothing changes, and the log says why.
            try write(listener + "timeouts: { login: nonsense }\n")
            process.signal(SIGHUP)
            #expect(try await Self.waitForLog(log, "reload failed, the configuration in force is kept"))
            #expect(try await cutForLogin())

            process.signal(SIGUSR1)
            process.signal(SIGUSR2)
            #expect(try await Self.waitForLog(log, "SIGUSR2 received; it does nothing here"))
            #expect(try await Self.waitForLog(log, "SIGUSR1 received; it does nothing here"))
            #expect(try await s.send("STAT").firstLine.hasPrefix("+OK 1 "))
            #expect(try await s.send("QUIT").isOK)
        }
        #expect(process.isRunning)
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
    }

    @Test("SIGHUP twenty times while 100 sessions run: every session completes, every transcript has its end")
    func reloadUnderLoad() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let path = Self.temporary("reload-load") + ".yaml"
        let log = Self.temporary("reload-load-log")
        let transcripts = Self.temporary("reload-load-t")
        defer {
            for file in [path, log, transcripts] { try? FileManager.default.removeItem(atPath: file) }
        }
        let listener =
            "listeners:\n  - listen: 127.0.0.1:0\n    upstream: 127.0.0.1:\(dovecot.port)\ntranscripts: \(transcripts)\n"
        try listener.write(toFile: path, atomically: true, encoding: .utf8)
        let (process, port) = try await Self.serveOnAnyPort(["--config", path], log: log, listen: false)
        // Four clients, 25 sessions each, one after another: log in, read, leave.
        let script = """
            import poplib, threading
            ok = []
            def run():
                for _ in range(25):
                    p = poplib.POP3('127.0.0.1', \(port), timeout=20)
                    p.user('alice'); p.pass_('wonderland'); p.stat(); p.retr(1); p.quit(); ok.append(1)
            threads = [threading.Thread(target=run) for _ in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(len(ok))
            """
        let load = Task { try await runTool("python3", ["-c", script]) }
        for round in 0..<20 {
            try (listener + "timeouts: { login: \(60 + round) }\n").write(
                toFile: path,
                atomically: true,
                encoding: .utf8
            )
            process.signal(SIGHUP)
            try await Task.sleep(for: .milliseconds(100))
        }
        let completed = try await load.value.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(completed == "100")
        #expect(process.isRunning)
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        let logged = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logged.components(separatedBy: "reloaded the configuration").count - 1 >= 10)
        let texts = try FileManager.default.contentsOfDirectory(atPath: transcripts).filter { $0.hasSuffix(".txt") }
        #expect(texts.count == 100)
        for file in texts {
            let text = try String(contentsOfFile: transcripts + "/" + file, encoding: .utf8)
            #expect(text.contains("end of session") && text.contains("the client quit"), "\(file): \(text.suffix(300))")
        }
    }

    @Test(
        "a low descriptor limit: the excess is told the gateway is at capacity or out of descriptors, never that the upstream is unreachable; service recovers",
        arguments: [false, true]
    )
    func lowDescriptorLimit(_ explicitLimit: Bool) async throws {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        // The embedded server keeps every unauthenticated connection open, whatever else the machine runs.
        let upstream = try await EmbeddedPOP3Server.start(EmbeddedPOP3Server.Configuration())
        let log = Self.temporary("fd-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        // Without a limit of its own the gateway derives one from the 64 descriptors; with a limit above what
        // fits, the descriptors run out first.
        let process = try ChildProcess(
            "/usr/bin/prlimit",
            [
                "--nofile=64:64", binary.path, "serve", "--listen", "127.0.0.1:0", "--upstream",
                "127.0.0.1:\(upstream.port)",
            ]
                + (explicitLimit ? ["--max-connections", "200"] : []),
            output: log
        )
        #expect(try await Self.waitForLog(log, "listening on 127.0.0.1:"))
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let range = try #require(output.range(of: "listening on 127.0.0.1:"))
        let port = try #require(Int(output[range.upperBound...].prefix { $0.isNumber }))
        var clients: [RawSocket] = []
        var greetings: [String] = []
        for _ in 0..<40 {
            let client = try RawSocket(port: port)
            greetings.append(await client.readAll(seconds: 1))
            clients.append(client)
        }
        #expect(greetings.contains { $0.hasPrefix("+OK") })
        #expect(!greetings.contains { $0.contains("unreachable") }, "\(greetings)")
        if explicitLimit {
            #expect(greetings.contains { $0.contains("out of file descriptors") } || greetings.contains { $0.isEmpty })
            #expect(try await Self.waitForLog(log, "out of file descriptors"))
        } else {
            #expect(greetings.contains { $0.hasPrefix("-ERR [SYS/TEMP] the gateway is at capacity") }, "\(greetings)")
        }
        for client in clients { client.close() }
        // Service comes back by itself.
        var recovered = false
        for _ in 0..<50 where !recovered {
            try await Task.sleep(for: .milliseconds(100))
            let client = try RawSocket(port: port)
            recovered = await client.readAll(seconds: 1).hasPrefix("+OK")
            client.close()
        }
        #expect(recovered)
        process.signal(SIGTERM)
        _ = await process.wait(seconds: 10)
        try await upstream.stop()
    }

    @Test("a 50 MB message retrieved by a slow client grows the gateway's memory by less than 16 MB")
    func memory() async throws {
        var big = Array("From: big@example.org\r\nSubject: 50 MB\r\n\r\n".utf8)
        let line = Array((String(repeating: "x", count: 998) + "\r\n").utf8)
        while big.count < 50 * 1024 * 1024 { big += line }
        let dovecot = try Dovecot(messages: [big])
        let log = Self.temporary("mem-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let (process, port) = try await Self.serveOnAnyPort(["--upstream", "127.0.0.1:\(dovecot.port)"], log: log)
        // Warm up: one small session, then the baseline. The warm-up is not what this test measures, so it may
        // try three times.
        for attempt in 1...3 {
            do {
                _ = try await runTool("curl", ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(port)/"])
                break
            } catch  where attempt < 3 {
                try await Task.sleep(for: .milliseconds(200))
            } catch {
                let gateway = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                Issue.record("the gateway's log:\n\(gateway)\nDovecot's log:\n\(dovecot.logTail())")
                throw error
            }
        }
        let before = try #require(residentBytes(of: process.pid))
        // A client that reads 256 KiB every 10 ms: the gateway must hold the upstream back, not buffer.
        let script = """
            import socket, time, sys
            s = socket.create_connection(('127.0.0.1', \(port)))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            f = s.makefile('rb')
            f.readline(); s.sendall(b'USER alice\\r\\n'); f.readline(); s.sendall(b'PASS wonderland\\r\\n'); f.readline()
            s.sendall(b'RETR 1\\r\\n')
            total = 0
            while True:
                chunk = f.read1(262144)
                if not chunk: break
                total += len(chunk)
                if chunk.endswith(b'\\r\\n.\\r\\n'): break
                time.sleep(0.01)
            print(total)
            """
        let done = NIOLockedValueBox(false)
        let reader = Task {
            defer { done.withLockedValue { $0 = true } }
            return try await runTool("python3", ["-c", script])
        }
        var peak = before
        while !done.withLockedValue({ $0 }) {
            if let rss = residentBytes(of: process.pid) { peak = max(peak, rss) }
            try await Task.sleep(for: .milliseconds(20))
        }
        let received = Int(try await reader.value.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(received > 50 * 1024 * 1024)
        print("popgate serve: resident memory grew by \(peak - before) bytes during a 50 MB RETR")
        #expect(peak - before < 16 * 1024 * 1024, "grew by \(peak - before) bytes")
        await process.stop()
        await dovecot.stop()
    }
}
