import Foundation

/// A real Prometheus (Debian's `prometheus`) scraping one target every second, on a free loopback port, with
/// its data in a temporary directory. Stopped by its pid.
public final class Prometheus: Sendable {
    public let port: Int
    let process: ChildProcess
    let directory: String

    /// `target`: HOST:PORT of a /metrics endpoint; `token`: the bearer token it wants, if any.
    public init(scraping target: String, token: String? = nil) async throws {
        self.directory =
            FileManager.default.temporaryDirectory.appendingPathComponent(
                "popgate-prometheus-\(UUID().uuidString.prefix(8))"
            ).path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        let authorization = token.map { "\n    authorization: { credentials: \"\($0)\" }" } ?? ""
        let config = """
            global: { scrape_interval: 1s, scrape_timeout: 1s }
            scrape_configs:
              - job_name: popgate
                static_configs: [{ targets: ["\(target)"] }]\(authorization)
            """
        try config.write(toFile: self.directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        var started: (ChildProcess, Int)?
        for _ in 0..<3 where started == nil {
            let port = try Dovecot.freePort()
            let process = try ChildProcess(
                "/usr/bin/prometheus",
                [
                    "--config.file=\(self.directory)/prometheus.yml", "--storage.tsdb.path=\(self.directory)/data",
                    "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn",
                ],
                output: self.directory + "/log"
            )
            for _ in 0..<150 where process.isRunning {
                let ready = try await runShell("curl -s --max-time 1 http://127.0.0.1:\(port)/-/ready")
                if ready.contains("Ready") {
                    started = (process, port)
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            if started == nil { await process.stop() }
        }
        guard let (process, port) = started else {
            let log = (try? String(contentsOfFile: self.directory + "/log", encoding: .utf8)) ?? ""
            throw ChildProcess.Failure(description: "Prometheus did not start; its log:\n\(log)")
        }
        self.process = process
        self.port = port
    }

    /// The value of an instant query's single result, or nil when it has none.
    public func value(_ query: String) async throws -> Double? {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let body = try await runShell(
            "curl -s --max-time 5 'http://127.0.0.1:\(self.port)/api/v1/query?query=\(encoded)'"
        )
        guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let data = json["data"] as? [String: Any], let results = data["result"] as? [[String: Any]],
            let first = results.first, let pair = first["value"] as? [Any], let text = pair.last as? String
        else { return nil }
        return Double(text)
    }

    /// Waits up to `seconds` for `query` to give `expected`; returns the last value seen.
    public func wait(for query: String, toBe expected: Double, seconds: Double = 20) async throws -> Double? {
        var last: Double?
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            last = try await self.value(query)
            if last == expected { return last }
            try await Task.sleep(for: .milliseconds(250))
        }
        return last
    }

    /// Whether the last scrape of the target succeeded (`up`).
    public func targetUp() async throws -> Bool { try await self.value("up") == 1 }

    public func stop() async {
        await self.process.stop()
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
