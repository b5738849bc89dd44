import Foundation
import PopgateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `--http`: the live page, its API, the metrics and the health checks, with real parts: Dovecot upstream, curl
/// and Python's poplib as clients, Debian's headless Chromium (driven by Selenium, Tests/Browser/live_page.py)
/// reading the page's DOM, and a real Prometheus scraping /metrics.
@Suite("the live page and metrics (--http)", .timeLimit(.minutes(5)), .serialized)
struct LivePageTests {
    /// `popgate serve --http 127.0.0.1:0` in front of `dovecot`: its POP3 and HTTP ports, read from its log.
    struct Gateway {
        let process: ChildProcess
        let port: Int
        let http: Int
        let log: String

        init(dovecot upstream: Int, extra: [String] = [], environment token: String? = nil) async throws {
            self.log = ServeProcessTests.temporary("http-log")
            (self.process, self.port) = try await ServeProcessTests.serveOnAnyPort(
                ["--upstream", "127.0.0.1:\(upstream)", "--http", "127.0.0.1:0"] + extra,
                log: self.log
            )
            self.http = try await Self.httpPort(log: self.log, process: self.process)
        }

        static func httpPort(log: String, process: ChildProcess) async throws -> Int {
            for _ in 0..<500 {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if let range = output.range(of: " is on http://127.0.0.1:"),
                    let port = Int(output[range.upperBound...].prefix { $0.isNumber })
                {
                    return port
                }
                guard process.isRunning else { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw ChildProcess.Failure(description: "no live page reported; the log:\n\(output)")
        }

        var page: String { "http://127.0.0.1:\(self.http)/" }
        var output: String { (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? "" }

        func stop() async {
            await self.process.stop()
            try? FileManager.default.removeItem(atPath: self.log)
        }

        /// GET `path`: the status code and the body.
        func get(_ path: String, headers: [String] = []) async throws -> (Int, String) {
            let flags = headers.map { "-H '\($0)'" }.joined(separator: " ")
            let output = try await runShell(
                "curl -sS --max-time 10 \(flags) -w '\\nstatus=%{http_code}' http://127.0.0.1:\(self.http)\(path)"
            )
            let parts = output.components(separatedBy: "\nstatus=")
            return (Int(parts.last?.filter(\.isNumber) ?? "") ?? -1, parts.dropLast().joined())
        }

        func curl(_ path: String = "/", user: String = "alice:wonderland") async throws -> String {
            try await runShell("curl -sS --max-time 10 -u \(user) pop3://127.0.0.1:\(self.port)\(path)")
        }
    }

    /// Runs `body`, then `cleanup` whether or not it threw: the processes a test started are stopped by their
    /// pid before the test ends (a detached task in a defer may never run).
    static func cleaning(_ body: () async throws -> Void, cleanup: () async -> Void) async throws {
        do {
            try await body()
        } catch {
            await cleanup()
            throw error
        }
        await cleanup()
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text)")
    }

    static func browser(_ arguments: [String]) async throws -> String {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Browser/live_page.py").path
        return try await runShell("python3 \(script) \(arguments.joined(separator: " "))")
    }

    @Test("the API lists a session through Dovecot with its user, its state and how it ended; the password never")
    func api() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway(dovecot: dovecot.port)
        try await Self.cleaning {
            let listing = try await gateway.curl()
            #expect(listing.hasPrefix("1 "), "\(listing)")
            let (status, body) = try await gateway.get("/api/sessions")
            #expect(status == 200)
            let sessions = try #require(try Self.json(body)["sessions"] as? [[String: Any]])
            #expect(sessions.count == 1)
            let session = try #require(sessions.first)
            #expect(session["client"] as? String != nil)
            #expect(session["ending"] as? String == "the client quit")
            #expect(session["open"] as? Bool == false)
            #expect((session["commands"] as? Int ?? 0) >= 3)
            let id = try #require(session["id"] as? String)
            let (one, detail) = try await gateway.get("/api/sessions/\(id)")
            #expect(one == 200)
            let records = try #require(try Self.json(detail)["records"] as? [[String: Any]])
            let kinds = records.compactMap { $0["kind"] as? String }
            #expect(kinds.first == "session-start" && kinds.last == "session-end")
            #expect(
                records.contains { ($0["kind"] as? String) == "state" && ($0["state"] as? String) == "transaction" }
            )
            #expect(!detail.contains("wonderland"), "the password is in the API")
            #expect(try await gateway.get("/api/sessions/nonesuch").0 == 404)
            #expect(try await gateway.get("/healthz") == (200, "ok\n"))
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test(
        "metrics: sessions by listener and ending, commands by verb, anomalies by rule; no user or address as a label"
    )
    func metrics() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let config = ServeProcessTests.temporary("http-config") + ".yaml"
        defer { try? FileManager.default.removeItem(atPath: config) }
        try """
        listeners:
          - name: front
            listen: 127.0.0.1:0
            upstream: 127.0.0.1:\(dovecot.port)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let log = ServeProcessTests.temporary("http-log")
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--config", config, "--http", "127.0.0.1:0"],
            log: log,
            listen: false
        )
        let http = try await Gateway.httpPort(log: log, process: process)
        try await Self.cleaning {
            for _ in 0..<3 {
                _ = try await runShell("curl -sS --max-time 10 -u alice:wonderland pop3://127.0.0.1:\(port)/")
            }
            _ = try await runShell("printf 'FROB\\r\\nQUIT\\r\\n' | curl -sS --max-time 5 telnet://127.0.0.1:\(port)")
            try await Task.sleep(for: .milliseconds(300))
            let text = try await runShell("curl -sS --max-time 10 http://127.0.0.1:\(http)/metrics")
            #expect(text.contains("popgate_sessions_opened_total{listener=\"front\"} 4"), "\(text)")
            #expect(text.contains("popgate_sessions_ended_total{listener=\"front\",ending=\"client_quit\"} 4"))
            #expect(text.contains("popgate_sessions_open{listener=\"front\"} 0"))
            #expect(
                text.contains("popgate_commands_total{verb=\"PASS\"} 3")
                    || text.contains("popgate_commands_total{verb=\"AUTH\"} 3")
            )
            #expect(text.contains("popgate_commands_total{verb=\"other\"} 1"), "an unknown verb counts as other")
            #expect(!text.contains("FROB"), "a verb the client made up became a label")
            #expect(text.contains("popgate_upstream_connect_seconds_count{listener=\"front\"} 4"))
            #expect(text.contains("popgate_session_duration_seconds_count 4"))
            #expect(text.contains("popgate_octets_total{direction=\"from_client\"}"))
            #expect(
                text.range(
                    of: #"popgate_anomalies_total\{rule="R\d+",severity="\w+"\} [1-9]"#,
                    options: .regularExpression
                )
                    != nil
            )
            for secret in ["alice", "wonderland", "127.0.0.1"] {
                #expect(!text.contains(secret), "\(secret) is in the metrics")
            }
        } cleanup: {
            await process.stop()
            await dovecot.stop()
            try? FileManager.default.removeItem(atPath: log)
        }
    }

    @Test("metrics: TLS handshakes with openssl s_client and with garbage, refusals by the rules line that refused")
    func tlsAndRefusals() async throws {
        let dovecot = try Dovecot()
        let certificates = try await TestCertificates.make()
        let rules = ServeProcessTests.temporary("http-rules") + ".rules"
        try "allow from 127.0.0.2\ndeny from any\n".write(toFile: rules, atomically: true, encoding: .utf8)
        let gateway = try await Gateway(
            dovecot: dovecot.port,
            extra: ["--cert", certificates.certificate, "--key", certificates.key, "--rules", rules]
        )
        try await Self.cleaning {
            // STLS answered by the gateway, a full handshake by openssl, then QUIT.
            let handshake = try await runShell(
                "(sleep 1; echo QUIT) | timeout 10 openssl s_client -connect 127.0.0.1:\(gateway.port) -starttls pop3 -bind 127.0.0.2 -ign_eof 2>&1"
            )
            #expect(handshake.contains("+OK"), "\(handshake)")
            // STLS, then garbage where the handshake should be.
            let garbage = try RawSocket(port: gateway.port, from: "127.0.0.2")
            _ = await garbage.readUntil("\r\n", seconds: 5)
            garbage.send("STLS\r\n")
            _ = await garbage.readUntil("\r\n", seconds: 5)
            garbage.send(String(repeating: "not a TLS hello ", count: 20) + "\r\n")
            _ = await garbage.readAll(seconds: 5)
            garbage.close()
            // Refused by the rules' second line.
            let refused = try RawSocket(port: gateway.port, from: "127.0.0.3")
            _ = await refused.readAll(seconds: 5)
            refused.close()
            try await Task.sleep(for: .milliseconds(300))
            let (_, text) = try await gateway.get("/metrics")
            #expect(
                text.contains(#"popgate_tls_handshakes_total{listener="listener1",peer="client",result="ok"} 1"#),
                "\(text)"
            )
            #expect(
                text.contains(#"popgate_tls_handshakes_total{listener="listener1",peer="client",result="failed"} 1"#)
            )
            #expect(text.contains("popgate_refusals_total{listener=\"listener1\",rule=\"\(rules):2\"} 1"))
            #expect(text.contains(#"popgate_sessions_ended_total{listener="listener1",ending="refused"} 1"#))
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
            certificates.remove()
            try? FileManager.default.removeItem(atPath: rules)
        }
    }

    @Test("a real Prometheus scrapes /metrics with the bearer token; its query API has the counts of 3 sessions")
    func prometheus() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway(dovecot: dovecot.port, extra: ["--http-token", "scrape-t0ken"])
        let prometheus = try await Prometheus(scraping: "127.0.0.1:\(gateway.http)", token: "scrape-t0ken")
        try await Self.cleaning {
            for _ in 0..<3 { _ = try await gateway.curl("/1") }
            let opened = try await prometheus.wait(for: "sum(popgate_sessions_opened_total)", toBe: 3)
            #expect(opened == 3)
            let quit = try await prometheus.wait(
                for: "sum(popgate_sessions_ended_total{ending=\"client_quit\"})",
                toBe: 3
            )
            #expect(quit == 3)
            #expect(try await prometheus.value("sum(popgate_commands_total{verb=\"RETR\"})") == 3)
            #expect(try await prometheus.value("popgate_sessions_open") == 0)
            #expect(try await prometheus.value("sum(popgate_upstream_connect_seconds_count)") == 3)
            #expect(try await prometheus.targetUp())
        } cleanup: {
            await prometheus.stop()
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test("--log-format json: every log line one JSON object, the session's end with its id, no password")
    func jsonLogs() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway(dovecot: dovecot.port, extra: ["--log-format", "json"])
        try await Self.cleaning {
            _ = try await gateway.curl("/1")
            var ended: [String: Any]?
            for _ in 0..<100 where ended == nil {
                try await Task.sleep(for: .milliseconds(50))
                let lines = gateway.output.split(separator: "\n").map(String.init)
                for line in lines {
                    let object = try Self.json(line)
                    #expect(object["time"] is String && object["level"] is String && object["message"] is String)
                    if (object["message"] as? String)?.hasPrefix("session ended") == true { ended = object }
                }
            }
            let line = try #require(ended, "no session line in \(gateway.output)")
            #expect((line["session"] as? String)?.isEmpty == false)
            #expect(line["level"] as? String == "info")
            #expect(line["commands"] as? String != nil)
            #expect(!gateway.output.contains("wonderland"))
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test("a bearer token guards the page, the API and /metrics, not the health checks")
    func token() async throws {
        let dovecot = try Dovecot()
        let gateway = try await Gateway(dovecot: dovecot.port, extra: ["--http-token", "s3cret-t0ken"])
        try await Self.cleaning {
            for path in ["/", "/api/sessions", "/metrics", "/api/stream"] {
                let (status, body) = try await gateway.get(path)
                #expect(status == 401, "\(path): \(status)")
                #expect(body.contains("bearer token is needed"))
                #expect(try await gateway.get(path, headers: ["Authorization: Bearer wrong"]).0 == 401)
            }
            #expect(try await gateway.get("/api/sessions", headers: ["Authorization: Bearer s3cret-t0ken"]).0 == 200)
            #expect(try await gateway.get("/api/sessions?token=s3cret-t0ken").0 == 200)
            #expect(try await gateway.get("/healthz").0 == 200)
            #expect(try await gateway.get("/readyz").0 == 200)
            let page = try await Self.browser(["token", "--page", gateway.page, "--token", "s3cret-t0ken"])
            #expect(page.contains("OK refused without the token, live with it"), "\(page)")
            #expect(!gateway.output.contains("s3cret-t0ken"), "the token is in the log")
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test("/readyz: ready while the upstream answers, 503 with the reason once it is gone")
    func readiness() async throws {
        let dovecot = try Dovecot()
        let gateway = try await Gateway(dovecot: dovecot.port)
        try await Self.cleaning {
            #expect(try await gateway.get("/readyz") == (200, "ready\n"))
            await dovecot.stop()
            let (status, body) = try await gateway.get("/readyz")
            #expect(status == 503)
            #expect(body.contains("not ready: the upstream 127.0.0.1:\(dovecot.port) cannot be reached"), "\(body)")
            #expect(try await gateway.get("/healthz").0 == 200, "alive, only not ready")
        } cleanup: {
            await gateway.stop()
        }
    }

    @Test(
        "in Chromium: the session appears, lights TRANSACTION, shows its anomaly, masks the password, keeps markup as text, asks nothing of outside"
    )
    func page() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let gateway = try await Gateway(dovecot: dovecot.port)
        try await Self.cleaning {
            let screenshot =
                ProcessInfo.processInfo.environment["POPGATE_SCREENSHOT"].map { ["--screenshot", $0] } ?? []
            let output = try await Self.browser(
                ["gateway", "--page", gateway.page, "--pop", "127.0.0.1:\(gateway.port)"] + screenshot
            )
            #expect(output.hasPrefix("OK "), "\(output)")
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test("in Chromium: a page that stops reading is told how many events it missed, and the session is not held back")
    func stalledViewer() async throws {
        let dovecot = try Dovecot()
        let gateway = try await Gateway(dovecot: dovecot.port)
        try await Self.cleaning {
            // The page is kept busy for 20 s: a session it held back would take about that long, one slowed
            // only by a loaded machine (10 s seen for 30,000 NOOPs beside the whole suite) would not.
            let output = try await Self.browser(
                [
                    "stalled", "--page", gateway.page, "--pop", "127.0.0.1:\(gateway.port)", "--commands", "30000",
                    "--stall", "20",
                ]
            )
            #expect(output.hasPrefix("OK missed="), "\(output)")
            let missed = output.components(separatedBy: "missed=").last.flatMap { Int($0.prefix { $0.isNumber }) } ?? 0
            #expect(missed > 0)
        } cleanup: {
            await gateway.stop()
            await dovecot.stop()
        }
    }

    @Test("demo --http: the scripted session is on the page's API, with its anomaly, and the metrics count it")
    func demo() async throws {
        let binary = try #require(popgateBinary())
        let log = ServeProcessTests.temporary("demo-http")
        let process = try ChildProcess(
            binary.path,
            ["demo", "--port", "0", "--http", "127.0.0.1:0", "--color", "never"],
            output: log
        )
        try await Self.cleaning {
            var http: Int?
            for _ in 0..<500 where http == nil {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if let range = output.range(of: "The live page: http://127.0.0.1:") {
                    http = Int(output[range.upperBound...].prefix { $0.isNumber })
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let port = try #require(http, "no live page in the demo's output")
            let body = try await runShell("curl -sS --max-time 10 http://127.0.0.1:\(port)/api/sessions")
            let sessions = try #require(try Self.json(body)["sessions"] as? [[String: Any]])
            #expect(sessions.count == 1)
            #expect(sessions.first?["user"] as? String == "alice")
            #expect((sessions.first?["anomalies"] as? Int ?? 0) >= 1, "the deliberate STAT before login")
            #expect(sessions.first?["listener"] as? String == "demo")
            let metrics = try await runShell("curl -sS --max-time 10 http://127.0.0.1:\(port)/metrics")
            #expect(metrics.contains(#"popgate_sessions_opened_total{listener="demo"} 1"#), "\(metrics)")
        } cleanup: {
            await process.stop()
            try? FileManager.default.removeItem(atPath: log)
        }
    }

    @Test("inspect --http: a capture's sessions on the page, stepped through line by line")
    func capture() async throws {
        let capture = InspectProcessTests.shared + "/zeek/pop3.pcap"
        let binary = try #require(popgateBinary())
        let log = ServeProcessTests.temporary("inspect-http")
        let process = try ChildProcess(binary.path, ["inspect", capture, "--http", "127.0.0.1:0"], output: log)
        try await Self.cleaning {
            let http = try await Gateway.httpPort(log: log, process: process)
            let output = try await Self.browser(["capture", "--page", "http://127.0.0.1:\(http)/", "--sessions", "5"])
            #expect(output.hasPrefix("OK sessions=5"), "\(output)")
        } cleanup: {
            await process.stop()
            try? FileManager.default.removeItem(atPath: log)
        }
    }
}
