import CoreMetrics
import NIOConcurrencyHelpers
import POP3Core
import POP3NIO
import POP3Relay
import Prometheus

/// The gateway's Prometheus metrics, kept through swift-metrics in a registry of its own (not the process-wide
/// `MetricsSystem`, so several gateways in one process, as in the tests, each count their own).
///
/// Every label has a bounded set of values known here: listener names from the configuration, verbs and rule ids
/// from the grammar, endings from ``SessionEnd``. What a client sends never becomes a label (an unknown verb counts
/// as `other`), and neither does a user name, an address or a credential.
public final class GatewayMetrics: ConversationSink, RelayObserver {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    /// Made once, read without a lock on every event.
    private let commands: [String: CoreMetrics.Counter]
    private let otherCommand: CoreMetrics.Counter
    private let replies: [String: CoreMetrics.Counter]
    private let anomalies: [Rule: CoreMetrics.Counter]
    private let octetsFromClient: CoreMetrics.Counter
    private let octetsFromUpstream: CoreMetrics.Counter
    private let sessionLength: CoreMetrics.Timer
    /// By listener name; made on first use, as a reload can name a listener anew.
    private let perListener = NIOLockedValueBox([String: Listener]())

    static let verbs = [
        "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL",
        "CAPA", "STLS", "UTF8", "LANG", "LAST", "RPOP", "XTND", "XSENDER",
    ]

    private struct Listener: Sendable {
        var opened: CoreMetrics.Counter
        var open: CoreMetrics.Meter
        var ended: [SessionEnd: CoreMetrics.Counter]
        var endedOther: CoreMetrics.Counter
        var connect: CoreMetrics.Timer
        var handshakes: [String: CoreMetrics.Counter]
        var refusals: [String: CoreMetrics.Counter] = [:]
    }

    public init(listeners: [String] = []) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "popgate_upstream_connect_seconds": [
                .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
            ],
            "popgate_session_duration_seconds": [
                .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
                .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(600), .seconds(1800),
            ],
        ]
        self.registry = registry
        self.factory = factory
        var commands: [String: CoreMetrics.Counter] = [:]
        for verb in Self.verbs {
            commands[verb] = CoreMetrics.Counter(
                label: "popgate_commands_total",
                dimensions: [("verb", verb)],
                factory: factory
            )
        }
        self.commands = commands
        self.otherCommand = CoreMetrics.Counter(
            label: "popgate_commands_total",
            dimensions: [("verb", "other")],
            factory: factory
        )
        var replies: [String: CoreMetrics.Counter] = [:]
        for status in ["ok", "err", "continuation", "not_a_reply"] {
            replies[status] = CoreMetrics.Counter(
                label: "popgate_replies_total",
                dimensions: [("status", status)],
                factory: factory
            )
        }
        self.replies = replies
        var anomalies: [Rule: CoreMetrics.Counter] = [:]
        for rule in Rule.allCases {
            anomalies[rule] = CoreMetrics.Counter(
                label: "popgate_anomalies_total",
                dimensions: [("rule", rule.id), ("severity", rule.defaultSeverity.rawValue)],
                factory: factory
            )
        }
        self.anomalies = anomalies
        self.octetsFromClient = CoreMetrics.Counter(
            label: "popgate_octets_total",
            dimensions: [("direction", "from_client")],
            factory: factory
        )
        self.octetsFromUpstream = CoreMetrics.Counter(
            label: "popgate_octets_total",
            dimensions: [("direction", "from_upstream")],
            factory: factory
        )
        self.sessionLength = CoreMetrics.Timer(label: "popgate_session_duration_seconds", factory: factory)
        for name in listeners { _ = self.listener(name) }
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> String { self.registry.emitToString() }

    private func listener(_ name: String) -> Listener {
        self.perListener.withLockedValue { all in
            if let known = all[name] { return known }
            let factory = self.factory
            let dimensions = [("listener", name)]
            var ended: [SessionEnd: CoreMetrics.Counter] = [:]
            for end in SessionEnd.allCases {
                ended[end] = CoreMetrics.Counter(
                    label: "popgate_sessions_ended_total",
                    dimensions: dimensions + [("ending", end.label)],
                    factory: factory
                )
            }
            var handshakes: [String: CoreMetrics.Counter] = [:]
            for peer in ["client", "upstream"] {
                for result in ["ok", "failed"] {
                    handshakes["\(peer) \(result)"] = CoreMetrics.Counter(
                        label: "popgate_tls_handshakes_total",
                        dimensions: dimensions + [("peer", peer), ("result", result)],
                        factory: factory
                    )
                }
            }
            let made = Listener(
                opened: CoreMetrics.Counter(
                    label: "popgate_sessions_opened_total",
                    dimensions: dimensions,
                    factory: factory
                ),
                open: CoreMetrics.Meter(label: "popgate_sessions_open", dimensions: dimensions, factory: factory),
                ended: ended,
                endedOther: CoreMetrics.Counter(
                    label: "popgate_sessions_ended_total",
                    dimensions: dimensions + [("ending", "other")],
                    factory: factory
                ),
                connect: CoreMetrics.Timer(
                    label: "popgate_upstream_connect_seconds",
                    dimensions: dimensions,
                    factory: factory
                ),
                handshakes: handshakes
            )
            all[name] = made
            return made
        }
    }

    // MARK: ConversationSink

    public func sessionStarted(_ session: SessionInfo, time: Double) {
        let listener = self.listener(session.listener ?? "listener1")
        listener.opened.increment()
        listener.open.increment()
    }

    public func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        for event in events {
            switch event {
            case .command(let command):
                (self.commands[command.verb] ?? self.otherCommand).increment()
            case .reply(let reply):
                let status =
                    switch reply.reply?.status {
                    case .ok?: "ok"
                    case .err?: "err"
                    case .continuation?: "continuation"
                    case nil: "not_a_reply"
                    }
                self.replies[status]?.increment()
            case .anomaly(let anomaly):
                self.anomalies[anomaly.rule]?.increment()
            default:
                break
            }
        }
    }

    public func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        let listener = self.listener(session.listener ?? "listener1")
        listener.open.decrement()
        let end = summary.ending.flatMap(SessionEnd.init(rawValue:))
        (end.flatMap { listener.ended[$0] } ?? listener.endedOther).increment()
        self.octetsFromClient.increment(by: summary.clientOctets)
        self.octetsFromUpstream.increment(by: summary.serverOctets)
        if let duration = summary.duration { self.sessionLength.recordNanoseconds(Int64(duration * 1e9)) }
    }

    // MARK: RelayObserver

    public func upstreamConnected(listener: String, seconds: Double) {
        self.listener(listener).connect.recordNanoseconds(Int64(seconds * 1e9))
    }

    public func tlsHandshake(listener: String, upstream: Bool, succeeded: Bool) {
        let key = "\(upstream ? "upstream" : "client") \(succeeded ? "ok" : "failed")"
        self.listener(listener).handshakes[key]?.increment()
    }

    public func refused(listener name: String, rule: String) {
        _ = self.listener(name)
        let counter = self.perListener.withLockedValue { all -> CoreMetrics.Counter in
            if let known = all[name]?.refusals[rule] { return known }
            let made = CoreMetrics.Counter(
                label: "popgate_refusals_total",
                dimensions: [("listener", name), ("rule", rule)],
                factory: self.factory
            )
            all[name]?.refusals[rule] = made
            return made
        }
        counter.increment()
    }
}
