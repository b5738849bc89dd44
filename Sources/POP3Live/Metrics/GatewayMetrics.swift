import CoreMetrics
import NIOConcurrencyHelpers
import NIOPosix
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
///
/// What every line adds to (commands, replies, anomalies) is counted per thread and added to the registry's
/// counters when ``exposition()`` is asked for: counters that both event loops add to on every line cost each
/// core the other's cache line (measured: 40 µs a session on two cores, more than the relay's own work).
public final class GatewayMetrics: ConversationSink, RelayObserver {
    private let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    /// Made once, read without a lock: the counters by position, as a ``Tally`` counts them.
    private let verbIndex: [String: Int]
    private let commands: [CoreMetrics.Counter]
    private let replies: [CoreMetrics.Counter]
    private let anomalies: [CoreMetrics.Counter]
    private let perThread = ThreadSpecificVariable<Tally>()
    private let tallies = NIOLockedValueBox([Tally]())
    private let octetsFromClient: CoreMetrics.Counter
    private let octetsFromUpstream: CoreMetrics.Counter
    private let sessionLength: CoreMetrics.Timer
    /// By listener name; made on first use, as a reload can name a listener anew.
    private let perListener = NIOLockedValueBox([String: Listener]())

    static let verbs = [
        "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL",
        "CAPA", "STLS", "UTF8", "LANG", "LAST", "RPOP", "XTND", "XSENDER",
    ]

    /// One thread's counts since the last exposition, by the counters' positions. Its lock is the thread's own
    /// but while an exposition takes the counts.
    private final class Tally: @unchecked Sendable {
        let lock = NIOLock()
        var commands: [Int64]
        var replies: [Int64]
        var anomalies: [Int64]

        init(commands: Int, replies: Int, anomalies: Int) {
            self.commands = Array(repeating: 0, count: commands)
            self.replies = Array(repeating: 0, count: replies)
            self.anomalies = Array(repeating: 0, count: anomalies)
        }

        /// The counts so far, and zero from here.
        func take() -> (commands: [Int64], replies: [Int64], anomalies: [Int64]) {
            self.lock.withLock {
                defer {
                    for i in self.commands.indices { self.commands[i] = 0 }
                    for i in self.replies.indices { self.replies[i] = 0 }
                    for i in self.anomalies.indices { self.anomalies[i] = 0 }
                }
                return (self.commands, self.replies, self.anomalies)
            }
        }
    }

    /// The order of ``replies``.
    private static let statuses = ["ok", "err", "continuation", "not_a_reply"]

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
        // The last command counter is `other`.
        self.verbIndex = Dictionary(uniqueKeysWithValues: Self.verbs.enumerated().map { ($1, $0) })
        self.commands = (Self.verbs + ["other"]).map { verb in
            CoreMetrics.Counter(label: "popgate_commands_total", dimensions: [("verb", verb)], factory: factory)
        }
        self.replies = Self.statuses.map { status in
            CoreMetrics.Counter(label: "popgate_replies_total", dimensions: [("status", status)], factory: factory)
        }
        self.anomalies = Rule.allCases.map { rule in
            CoreMetrics.Counter(
                label: "popgate_anomalies_total",
                dimensions: [("rule", rule.id), ("severity", rule.defaultSeverity.rawValue)],
                factory: factory
            )
        }
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

    /// The Prometheus text exposition of every metric, with every thread's counts added first.
    public func exposition() -> String {
        for tally in self.tallies.withLockedValue({ $0 }) {
            let counts = tally.take()
            for (counter, n) in zip(self.commands, counts.commands) where n > 0 { counter.increment(by: n) }
            for (counter, n) in zip(self.replies, counts.replies) where n > 0 { counter.increment(by: n) }
            for (counter, n) in zip(self.anomalies, counts.anomalies) where n > 0 { counter.increment(by: n) }
        }
        return self.registry.emitToString()
    }

    /// The calling thread's tally, made on its first event.
    private var tally: Tally {
        if let tally = self.perThread.currentValue { return tally }
        let tally = Tally(commands: self.commands.count, replies: self.replies.count, anomalies: self.anomalies.count)
        self.perThread.currentValue = tally
        self.tallies.withLockedValue { $0.append(tally) }
        return tally
    }

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
        let tally = self.tally
        tally.lock.withLockVoid {
            for event in events {
                switch event {
                case .command(let command):
                    tally.commands[self.verbIndex[command.verb] ?? Self.verbs.count] += 1
                case .reply(let reply):
                    // In the order of `statuses`.
                    let status =
                        switch reply.reply?.status {
                        case .ok?: 0
                        case .err?: 1
                        case .continuation?: 2
                        case nil: 3
                        }
                    tally.replies[status] += 1
                case .anomaly(let anomaly):
                    if let index = Rule.allCases.firstIndex(of: anomaly.rule) { tally.anomalies[index] += 1 }
                default:
                    break
                }
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
