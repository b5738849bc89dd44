import NIOConcurrencyHelpers
import POP3Core
import POP3NIO

/// The sessions the live page shows, open and recent, each with its annotated transcript, and the viewers that
/// follow them.
///
/// A ``ConversationSink``, called on each session's event loop: it never waits. A viewer's queue is bounded; a
/// viewer that does not keep up loses events (and is told how many), it never holds a session back. Transcripts
/// are rendered (in the transcript's JSON schema, secrets masked as in every transcript) only when someone asks
/// for them or follows the session, so a board nobody watches costs little more than keeping the events.
public final class LiveBoard: ConversationSink {
    public struct Limits: Sendable {
        /// Transcript records kept per session; the oldest go first, and the count of those gone is shown.
        public var recordsPerSession = 2000
        /// Ended sessions kept after they end.
        public var recentSessions = 200
        /// Messages a viewer's queue holds before it loses the newest.
        public var viewerQueue = 1024

        public init() {}
    }

    /// One session as the list shows it.
    public struct Summary: Sendable, Hashable {
        public var id: String
        public var client: String?
        public var via: String?
        public var gateway: String?
        public var server: String?
        public var listener: String?
        public var user: String?
        public var state: ConversationState = .greeting
        public var clientOctets = 0
        public var serverOctets = 0
        public var commands = 0
        public var anomalies = 0
        public var started: Double
        public var ended: Double?
        public var ending: String?

        /// One JSON object; keys in a fixed order.
        public var json: String {
            var out = "{"
            func field(_ name: String, _ value: String?, first: Bool = false) {
                out += (first ? "\"" : ",\"") + name + "\":"
                if let value { TranscriptRecord.appendQuoted(value, to: &out) } else { out += "null" }
            }
            func number(_ name: String, _ value: Int) { out += ",\"" + name + "\":" + String(value) }
            field("id", self.id, first: true)
            field("client", self.client)
            field("via", self.via)
            field("gateway", self.gateway)
            field("server", self.server)
            field("listener", self.listener)
            field("user", self.user)
            field("state", self.state.rawValue)
            field("stateName", self.state.displayName)
            number("clientOctets", self.clientOctets)
            number("serverOctets", self.serverOctets)
            number("commands", self.commands)
            number("anomalies", self.anomalies)
            field("started", TranscriptRecord.timestamp(self.started))
            field("ended", self.ended.map(TranscriptRecord.timestamp))
            field("ending", self.ending)
            out += ",\"open\":" + (self.ended == nil ? "true" : "false") + "}"
            return out
        }
    }

    /// A message for a viewer, as a server-sent event: its name and its JSON.
    public struct Message: Sendable, Hashable {
        public var event: String
        public var data: String

        /// The event as SSE puts it on the wire (the data is one line of JSON).
        public var wire: String { "event: \(self.event)\ndata: \(self.data)\n\n" }
    }

    private struct Session {
        var summary: Summary
        var renderer: TranscriptRenderer
        /// Rendered records, oldest first.
        var records: [String] = []
        /// Records dropped from the front to keep `records` bounded.
        var droppedRecords = 0
        /// Events not rendered yet, in order.
        var pending: [(Double, ConversationEvent)] = []
        /// The session's start and end, rendered with the rest when someone asks.
        var start: (time: Double, info: SessionInfo)?
        var end: (time: Double, text: String)?
        var followers = 0
    }

    /// A session is taken out of the dictionary while it changes and put back, so that its arrays are not
    /// copied on every change (the dictionary would otherwise still hold them).
    private struct State {
        var sessions: [String: Session] = [:]
        /// Ended sessions' ids, oldest first.
        var recent: [String] = []
        var viewers: [Int: Viewer] = [:]
        var nextViewer = 0
        /// Viewers that get every session's list updates.
        var listViewers = 0
    }

    /// One open page (or API stream): its queue, what it follows, what it lost.
    final class Viewer: Sendable {
        let continuation: AsyncStream<Message>.Continuation
        let follow: String?
        let missed = NIOLockedValueBox(0)

        init(continuation: AsyncStream<Message>.Continuation, follow: String?) {
            self.continuation = continuation
            self.follow = follow
        }

        func send(_ message: Message) {
            if case .dropped = self.continuation.yield(message) { self.missed.withLockedValue { $0 += 1 } }
        }
    }

    public let limits: Limits
    private let state = NIOLockedValueBox(State())

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    // MARK: - Reading

    /// Open sessions first (newest first), then the recent ones (newest first).
    public func summaries() -> [Summary] {
        self.state.withLockedValue { state in
            let open = state.sessions.values.filter { $0.summary.ended == nil }.map(\.summary)
                .sorted { ($0.started, $0.id) > ($1.started, $1.id) }
            let ended = state.recent.reversed().compactMap { state.sessions[$0]?.summary }
            return open + ended
        }
    }

    /// A session's summary and its transcript records so far; nil for a session the board does not have.
    public func transcript(_ id: String) -> (summary: Summary, records: [String], dropped: Int)? {
        self.state.withLockedValue { state in
            guard var session = state.sessions.removeValue(forKey: id) else { return nil }
            _ = Self.render(&session, limit: self.limits.recordsPerSession)
            state.sessions[id] = session
            return (session.summary, session.records, session.droppedRecords)
        }
    }

    // MARK: - Viewers

    /// A stream of messages for one viewer: list updates for every session, and with `follow`, that session's
    /// records from its start (as many as are kept), then as they come. It ends when the consumer stops.
    public func subscribe(follow: String? = nil) -> (stream: AsyncStream<Message>, missed: @Sendable () -> Int) {
        let (stream, continuation) = AsyncStream.makeStream(
            of: Message.self,
            bufferingPolicy: .bufferingOldest(self.limits.viewerQueue)
        )
        let viewer = Viewer(continuation: continuation, follow: follow)
        let number = self.state.withLockedValue { state -> Int in
            let number = state.nextViewer
            state.nextViewer += 1
            state.viewers[number] = viewer
            state.listViewers += 1
            for summary in Self.listed(state) { viewer.send(Message(event: "session", data: summary.json)) }
            if let follow, var session = state.sessions.removeValue(forKey: follow) {
                session.followers += 1
                _ = Self.render(&session, limit: self.limits.recordsPerSession)
                if session.droppedRecords > 0 {
                    viewer.send(Message(event: "dropped", data: "{\"records\":\(session.droppedRecords)}"))
                }
                for record in session.records { viewer.send(Message(event: "record", data: record)) }
                state.sessions[follow] = session
            }
            return number
        }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(number) }
        return (stream, { viewer.missed.withLockedValue { $0 } })
    }

    private func unsubscribe(_ number: Int) {
        self.state.withLockedValue { state in
            guard let viewer = state.viewers.removeValue(forKey: number) else { return }
            state.listViewers -= 1
            if let follow = viewer.follow { state.sessions[follow]?.followers -= 1 }
        }
    }

    /// Ends every viewer's stream (at shutdown).
    public func finishViewers() {
        let viewers = self.state.withLockedValue { Array($0.viewers.values) }
        for viewer in viewers { viewer.continuation.finish() }
    }

    /// How many viewers are connected.
    public var viewerCount: Int { self.state.withLockedValue { $0.viewers.count } }

    private static func listed(_ state: State) -> [Summary] {
        let ended = state.recent.compactMap { state.sessions[$0]?.summary }
        let open = state.sessions.values.filter { $0.summary.ended == nil }.map(\.summary).sorted {
            ($0.started, $0.id) < ($1.started, $1.id)
        }
        return ended + open
    }

    // MARK: - ConversationSink

    public func sessionStarted(_ info: SessionInfo, time: Double) {
        let summary = Summary(
            id: info.id,
            client: info.client,
            via: info.via,
            gateway: info.gateway,
            server: info.server,
            listener: info.listener,
            started: time
        )
        self.state.withLockedValue { state in
            state.sessions[info.id] = Session(
                summary: summary,
                renderer: TranscriptRenderer(session: info.id, format: .json),
                start: (time, info)
            )
            self.broadcast(summary, in: state)
        }
    }

    public func events(_ events: [ConversationEvent], session info: SessionInfo, time: Double) {
        self.state.withLockedValue { state in
            guard var session = state.sessions.removeValue(forKey: info.id) else { return }
            var changed = false
            for event in events {
                switch event {
                case .bodyLine, .bodyChunk:
                    // Folded: the body's end says its size.
                    continue
                case .command(let command):
                    session.summary.commands += 1
                    session.summary.clientOctets += command.text.utf8.count + 2
                    if session.summary.user == nil {
                        switch command.command {
                        case .user(let name)?, .apop(let name, _)?:
                            session.summary.user = name
                            changed = true
                        default: break
                        }
                    }
                case .saslResponse(let response):
                    session.summary.clientOctets += response.octets + 2
                case .reply(let reply):
                    session.summary.serverOctets += reply.text.utf8.count + 2
                case .bodyEnd(let body):
                    session.summary.serverOctets += body.octets + 3
                    changed = true
                case .stateChanged(let state, _):
                    session.summary.state = state
                    changed = true
                case .anomaly:
                    session.summary.anomalies += 1
                    changed = true
                case .opaque(let side, let octets):
                    if side == .client {
                        session.summary.clientOctets += octets
                    } else {
                        session.summary.serverOctets += octets
                    }
                default:
                    break
                }
                session.pending.append((time, event))
            }
            if session.followers > 0 {
                let fresh = Self.render(&session, limit: self.limits.recordsPerSession)
                for viewer in state.viewers.values where viewer.follow == info.id {
                    for record in fresh { viewer.send(Message(event: "record", data: record)) }
                }
            } else if session.pending.count + session.records.count > 2 * self.limits.recordsPerSession {
                _ = Self.render(&session, limit: self.limits.recordsPerSession)
            }
            if changed { self.broadcast(session.summary, in: state) }
            state.sessions[info.id] = session
        }
    }

    public func userIdentified(_ user: String, session info: SessionInfo) {
        self.state.withLockedValue { state in
            guard var session = state.sessions.removeValue(forKey: info.id) else { return }
            session.summary.user = user
            self.broadcast(session.summary, in: state)
            state.sessions[info.id] = session
        }
    }

    public func sessionEnded(_ info: SessionInfo, time: Double, summary: SessionSummary) {
        self.sessionEnded(info, time: time, summary: summary, described: summary.description)
    }

    /// `described`: the end record's text, when the one who saw the session says more than its summary (a
    /// capture's reassembly figures).
    public func sessionEnded(_ info: SessionInfo, time: Double, summary: SessionSummary, described: String) {
        self.state.withLockedValue { state in
            guard var session = state.sessions.removeValue(forKey: info.id) else { return }
            session.end = (time, described)
            session.summary.ended = time
            session.summary.ending = summary.ending ?? "closed"
            session.summary.state = summary.finalState
            session.summary.clientOctets = summary.clientOctets
            session.summary.serverOctets = summary.serverOctets
            session.summary.commands = summary.commands
            session.summary.anomalies = summary.anomalies
            if session.followers > 0 {
                let fresh = Self.render(&session, limit: self.limits.recordsPerSession)
                for viewer in state.viewers.values where viewer.follow == info.id {
                    for record in fresh { viewer.send(Message(event: "record", data: record)) }
                }
            }
            state.sessions[info.id] = session
            state.recent.append(info.id)
            if state.recent.count > self.limits.recentSessions {
                let over = state.recent.count - self.limits.recentSessions
                for gone in state.recent.prefix(over) { state.sessions.removeValue(forKey: gone) }
                state.recent.removeFirst(over)
            }
            self.broadcast(session.summary, in: state)
        }
    }

    // MARK: - Inside the lock

    private func broadcast(_ summary: Summary, in state: State) {
        guard state.listViewers > 0 else { return }
        let message = Message(event: "session", data: summary.json)
        for viewer in state.viewers.values { viewer.send(message) }
    }

    /// Renders what is pending (the start, the events, the end once it came); returns the records made. Only
    /// for someone who reads them: a session nobody looks at is never rendered.
    private static func render(_ session: inout Session, limit: Int) -> [String] {
        var fresh: [String] = []
        if let (time, info) = session.start {
            session.start = nil
            fresh += session.renderer.start(
                time: time,
                client: info.client,
                server: info.server,
                via: info.via,
                gateway: info.gateway
            )
        }
        for (time, event) in session.pending { fresh += session.renderer.render(event, time: time) }
        session.pending.removeAll()
        if let (time, text) = session.end {
            session.end = nil
            fresh += session.renderer.end(time: time, summary: text)
        }
        guard !fresh.isEmpty else { return [] }
        Self.keep(fresh, in: &session, limit: limit)
        return fresh
    }

    private static func keep(_ records: [String], in session: inout Session, limit: Int) {
        session.records += records
        let over = session.records.count - limit
        if over > 0 {
            session.records.removeFirst(over)
            session.droppedRecords += over
        }
    }
}
