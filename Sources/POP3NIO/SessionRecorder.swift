import Logging
import POP3Core

/// Where one session's record goes: its events, its summary and its end line.
///
/// The relay and ``ConversationTapHandler`` both keep a session's record through one of these, so transcripts,
/// anomaly counts and the end line are made in one place, and metrics or a live view attach here, not as branches
/// in the relay. A value held by the session, on its event loop.
public struct SessionRecorder {
    public let sink: (any ConversationSink)?
    public private(set) var info: SessionInfo
    public private(set) var anomalies = 0
    private var started = false
    private var startTime = 0.0
    private var user: String?
    private var ended = false

    public init(sink: (any ConversationSink)?, info: SessionInfo) {
        self.sink = sink
        self.info = info
    }

    public mutating func start(
        client: String?,
        server: String?,
        via: String? = nil,
        gateway: String? = nil,
        listener: String? = nil,
        time: Double
    ) {
        guard !self.started else { return }
        self.started = true
        self.startTime = time
        if let client { self.info.client = client }
        if let via { self.info.via = via }
        if let gateway { self.info.gateway = gateway }
        if let listener { self.info.listener = listener }
        if let server { self.info.server = server }
        self.sink?.sessionStarted(self.info, time: time)
    }

    /// Tells the sinks the session's user, once, when the login has named it.
    public mutating func identified(_ user: String?) {
        guard let user, user != self.user, let sink = self.sink else { return }
        self.user = user
        sink.userIdentified(user, session: self.info)
    }

    public mutating func record(_ events: [ConversationEvent], time: Double) {
        guard !events.isEmpty else { return }
        for case .anomaly in events { self.anomalies += 1 }
        self.sink?.events(events, session: self.info, time: time)
    }

    /// The session's last record; the anomaly count is the recorder's own. With a logger, one line at info.
    public mutating func end(
        time: Double,
        clientOctets: Int,
        serverOctets: Int,
        commands: Int,
        finalState: ConversationState,
        ending: String?,
        logger: Logger? = nil
    ) {
        guard self.started, !self.ended else { return }
        self.ended = true
        var summary = SessionSummary(
            clientOctets: clientOctets,
            serverOctets: serverOctets,
            commands: commands,
            anomalies: self.anomalies,
            finalState: finalState,
            ending: ending
        )
        summary.duration = max(0, time - self.startTime)
        self.sink?.sessionEnded(self.info, time: time, summary: summary)
        // The logger is built on demand; most gateways log at info, benchmarks above it.
        guard let logger, logger.logLevel <= .info else { return }
        var sessionLogger = logger
        sessionLogger[metadataKey: "session"] = "\(self.info.id)"
        sessionLogger.info(
            "session ended: \(ending ?? "closed")",
            metadata: [
                "client": "\(self.info.client ?? "?")\(self.info.via.map { " via \($0)" } ?? "")",
                "upstream": "\(self.info.server ?? "?")",
                "octets_from_client": "\(clientOctets)",
                "octets_from_upstream": "\(serverOctets)",
                "commands": "\(commands)",
                "anomalies": "\(self.anomalies)",
            ]
        )
    }
}
