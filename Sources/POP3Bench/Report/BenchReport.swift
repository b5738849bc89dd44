import Foundation
import Histogram

/// What a run measured: counts, rates, latency percentiles (microseconds, from HdrHistogram) and errors by kind.
public struct BenchReport: Sendable {
    public let workload: BenchRunner.Workload
    public let target: String
    public let tls: BenchRunner.TLSMode
    public let concurrency: Int
    public let completed: Int
    public let failed: Int
    public let errors: [String: Int]
    public let seconds: Double
    public let octets: Int
    let session: Histogram<UInt64>
    let command: Histogram<UInt64>

    init(options: BenchRunner.Options, tally: BenchRunner.Tally, seconds: Double) {
        self.workload = options.workload
        let host = options.host.contains(":") ? "[\(options.host)]" : options.host
        self.target = "\(host):\(options.port)"
        self.tls = options.tls
        self.concurrency = options.concurrency
        self.completed = tally.completed
        self.failed = tally.failed
        self.errors = tally.errors
        self.seconds = seconds
        self.octets = tally.octets
        self.session = tally.session
        self.command = tally.command
    }

    public var sessionsPerSecond: Double { self.seconds > 0 ? Double(self.completed) / self.seconds : 0 }
    public var megabytesPerSecond: Double { self.seconds > 0 ? Double(self.octets) / self.seconds / 1e6 : 0 }

    public static let percentiles: [(String, Double)] = [
        ("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9),
    ]

    /// Percentiles and the maximum, in microseconds; empty when nothing was measured.
    func latencies(_ histogram: Histogram<UInt64>) -> [(String, UInt64)] {
        guard histogram.totalCount > 0 else { return [] }
        return Self.percentiles.map { ($0.0, histogram.valueAtPercentile($0.1)) } + [("max", histogram.max)]
    }

    public var sessionLatencies: [(String, UInt64)] { self.latencies(self.session) }
    public var commandLatencies: [(String, UInt64)] { self.latencies(self.command) }

    static func time(_ microseconds: UInt64) -> String {
        microseconds >= 1000 ? String(format: "%.2f ms", Double(microseconds) / 1000) : "\(microseconds) µs"
    }

    /// For a person.
    public var text: [String] {
        var lines = [
            "popgate bench \(self.workload.rawValue) → \(self.target)\(self.tls == .none ? "" : " (\(self.tls.rawValue) TLS)"): "
                + "\(self.completed) session\(self.completed == 1 ? "" : "s") completed, \(self.failed) failed, "
                + "\(self.concurrency) at a time, \(String(format: "%.2f", self.seconds)) s"
        ]
        switch self.workload {
        case .sessions:
            lines.append("  sessions/s        \(String(format: "%.1f", self.sessionsPerSecond))")
        case .retr:
            lines.append(
                "  MB/s              \(String(format: "%.1f", self.megabytesPerSecond))  (\(self.octets) octets)"
            )
        case .idle:
            lines.append("  held, then NOOP, STAT and QUIT each")
        }
        for (name, values) in [("session", self.sessionLatencies), ("each reply", self.commandLatencies)]
        where !values.isEmpty {
            let shown = values.map { "\($0.0) \(Self.time($0.1))" }.joined(separator: "  ")
            lines.append("  latency, \(name)\(String(repeating: " ", count: max(1, 12 - name.count)))\(shown)")
        }
        if self.errors.isEmpty {
            lines.append("  errors            none")
        } else {
            lines.append("  errors:")
            for (kind, count) in self.errors.sorted(by: { $0.value > $1.value }) {
                lines.append("    \(count)  \(kind)")
            }
        }
        return lines
    }

    /// For a machine: one JSON object.
    public var json: String {
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        func object(_ values: [(String, UInt64)]) -> String {
            "{" + values.map { "\(quoted($0.0 + "_us")):\($0.1)" }.joined(separator: ",") + "}"
        }
        let errors = self.errors.sorted { $0.key < $1.key }.map { "\(quoted($0.key)):\($0.value)" }
        return "{\"workload\":\(quoted(self.workload.rawValue)),\"target\":\(quoted(self.target)),"
            + "\"tls\":\(quoted(self.tls.rawValue)),\"concurrency\":\(self.concurrency),"
            + "\"completed\":\(self.completed),\"failed\":\(self.failed),"
            + "\"seconds\":\(String(format: "%.3f", self.seconds)),"
            + "\"sessions_per_second\":\(String(format: "%.2f", self.sessionsPerSecond)),"
            + "\"octets\":\(self.octets),\"megabytes_per_second\":\(String(format: "%.3f", self.megabytesPerSecond)),"
            + "\"latency_session\":\(object(self.sessionLatencies)),\"latency_reply\":\(object(self.commandLatencies)),"
            + "\"errors\":{\(errors.joined(separator: ","))}}"
    }
}
