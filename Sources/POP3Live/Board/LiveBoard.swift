import NIOConcurrencyHelpers
import NIOPosix
import POP3Core
import POP3NIO
import Synchronization

/// The sessions the live page shows, open and recent, each with its annotated transcript, and the viewers that
/// follow them.
///
/// A ``ConversationSink``, called on each session's event loop: it never waits. A viewer's queue is bounded; a
/// viewer that does not keep up loses events (and is told how many), it never holds a session back. Transcripts
/// are rendered (in the transcript's JSON schema, secrets masked as in every transcript) only when someone asks
/// for them or follows the session, so a board nobody watches costs little more than keeping the events.
///
/// Sessions are kept in shards, one for each thread that reports sessions (each event loop), each with its own
/// lock: a session's calls come from its loop, so the loops do not queue on one lock taken on every read of
/// every session (on two cores the difference is within the benchmark's noise; it grows with the loops). Each
/// shard keeps up to `recentSessions` ended sessions; the list shows the newest `recentSessions` of them all.
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

    /// A class, so that a change is made where the dictionary holds it, with one lookup and no copy of its
    /// arrays. Only touched inside its shard's lock.
    private final class Session: @unchecked Sendable {
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
        var end: (time: Double, summary: SessionSummary, described: String?)?
        var followers = 0

        init(summary: Summary, renderer: TranscriptRenderer, start: (time: Double, info: SessionInfo)) {
            self.summary = summary
            self.renderer = renderer
            self.start = start
        }

        var unrendered: Int { self.pending.count + self.records.count }
    }

    /// One thread's sessions. Lock order: ``shards``, a shard, then ``viewers``; every shard at once only in
    /// ``subscribe(follow:)``, in the order of ``shards``. No shard's lock is held while ``shards`` is taken.
    private final class Shard: @unchecked Sendable {
        let lock = NIOLock()
        var sessions: [String: Session] = [:]
        /// Ended sessions' ids, oldest first.
        var recent: [String] = []
    }

    private struct Viewers {
        var all: [Int: Viewer] = [:]
        var next = 0
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
    private let perThread = ThreadSpecificVariable<Shard>()
    private let shards = NIOLockedValueBox([Shard]())
    private let viewers = NIOLockedValueBox(Viewers())
    /// Viewers connected, read without the viewers' lock: with none, nothing is broadcast.
    private let viewerTotal = Atomic<Int>(0)

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// The calling thread's shard, made on its first session.
    private var shard: Shard {
        if let shard = self.perThread.currentValue { return shard }
        let shard = Shard()
        self.perThread.currentValue = shard
        self.shards.withLockedValue { $0.append(shard) }
        return shard
    }

    /// Runs `body` on a session under its shard's lock: the calling thread's shard first (where a session's
    /// calls come from), then the others.
    @discardableResult
    private func withSession<T>(_ id: String, _ body: (Session, Shard) -> T) -> T? {
        let own = self.shard
        if let found = own.lock.withLock({ own.sessions[id].map { body($0, own) } }) { return found }
        for shard in self.shards.withLockedValue({ $0 }) where shard !== own {
            if let found = shard.lock.withLock({ shard.sessions[id].map { body($0, shard) } }) { return found }
        }
        return nil
    }

    // MARK: - Reading

    /// Open sessions first (newest first), then the recent ones (newest first).
    public func summaries() -> [Summary] {
        let (open, ended) = self.allSummaries()
        return open.reversed() + ended.reversed()
    }

    /// Open sessions and the newest `recentSessions` ended ones, each oldest first.
    private func allSummaries() -> (open: [Summary], ended: [Summary]) {
        self.listed(self.shards.withLockedValue { $0 }, locking: true)
    }

    /// The list over `shards`, taking each one's lock in turn, or with them all held by the caller.
    private func listed(_ shards: [Shard], locking: Bool) -> (open: [Summary], ended: [Summary]) {
        var open: [Summary] = []
        var ended: [Summary] = []
        for shard in shards {
            if locking { shard.lock.lock() }
            defer { if locking { shard.lock.unlock() } }
            for session in shard.sessions.values where session.summary.ended == nil { open.append(session.summary) }
            for id in shard.recent { if let session = shard.sessions[id] { ended.append(session.summary) } }
        }
        open.sort { ($0.started, $0.id) < ($1.started, $1.id) }
        ended.sort { ($0.ended ?? 0, $0.id) < ($1.ended ?? 0, $1.id) }
        return (open, Array(ended.suffix(self.limits.recentSessions)))
    }

    /// A session's summary and its transcript records so far; nil for a session the board does not have.
    public func transcript(_ id: String) -> (summary: Summary, records: [String], dropped: Int)? {
        self.withSession(id) { session, _ in
            _ = Self.render(session, limit: self.limits.recordsPerSession)
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
        // Every shard held while the viewer joins, so that it gets each session's state once and every change
        // after it, in order; the list of shards too, so that no loop's first session starts a shard meanwhile.
        let number = self.shards.withLockedValue { shards -> Int in
            for shard in shards { shard.lock.lock() }
            defer { for shard in shards.reversed() { shard.lock.unlock() } }
            let number = self.viewers.withLockedValue { viewers -> Int in
                let number = viewers.next
                viewers.next += 1
                viewers.all[number] = viewer
                return number
            }
            self.viewerTotal.add(1, ordering: .relaxed)
            let listed = self.listed(shards, locking: false)
            for summary in listed.ended + listed.open { viewer.send(Message(event: "session", data: summary.json)) }
            if let follow, let session = shards.lazy.compactMap({ $0.sessions[follow] }).first {
                session.followers += 1
                _ = Self.render(session, limit: self.limits.recordsPerSession)
                if session.droppedRecords > 0 {
                    viewer.send(Message(event: "dropped", data: "{\"records\":\(session.droppedRecords)}"))
                }
                for record in session.records { viewer.send(Message(event: "record", data: record)) }
            }
            return number
        }
        continuation.onTermination = { [weak self] _ in self?.unsubscribe(number) }
        return (stream, { viewer.missed.withLockedValue { $0 } })
    }

    private func unsubscribe(_ number: Int) {
        guard let viewer = self.viewers.withLockedValue({ $0.all.removeValue(forKey: number) }) else { return }
        self.viewerTotal.subtract(1, ordering: .relaxed)
        if let follow = viewer.follow { self.withSession(follow) { session, _ in session.followers -= 1 } }
    }

    /// Ends every viewer's stream (at shutdown).
    public func finishViewers() {
        let viewers = self.viewers.withLockedValue { Array($0.all.values) }
        for viewer in viewers { viewer.continuation.finish() }
    }

    /// How many viewers are connected.
    public var viewerCount: Int { self.viewers.withLockedValue { $0.all.count } }

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
        let shard = self.shard
        shard.lock.withLockVoid {
            shard.sessions[info.id] = Session(
                summary: summary,
                renderer: TranscriptRenderer(session: info.id, format: .json),
                start: (time, info)
            )
            self.broadcast(summary)
        }
    }

    public func events(_ events: [ConversationEvent], session info: SessionInfo, time: Double) {
        // The id alone is taken into the closure: a copy of the whole info costs a retain for each of its strings.
        let id = info.id
        self.withSession(id) { session, _ in
            let changed = Self.take(events, time: time, into: session)
            if session.followers > 0 {
                self.sendFresh(session, to: id)
            } else if session.unrendered > 2 * self.limits.recordsPerSession {
                _ = Self.render(session, limit: self.limits.recordsPerSession)
            }
            if changed { self.broadcast(session.summary) }
        }
    }

    /// Counts a session's events into its summary and keeps them for rendering; true when the list's row changed.
    private static func take(_ events: [ConversationEvent], time: Double, into session: Session) -> Bool {
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
        return changed
    }

    public func userIdentified(_ user: String, session info: SessionInfo) {
        self.withSession(info.id) { session, _ in
            session.summary.user = user
            self.broadcast(session.summary)
        }
    }

    public func sessionEnded(_ info: SessionInfo, time: Double, summary: SessionSummary) {
        self.end(info, time: time, summary: summary, described: nil)
    }

    /// `described`: the end record's text, when the one who saw the session says more than its summary (a
    /// capture's reassembly figures).
    public func sessionEnded(_ info: SessionInfo, time: Double, summary: SessionSummary, described: String) {
        self.end(info, time: time, summary: summary, described: described)
    }

    /// The end record's text is made when someone reads it: from `described`, or else from the summary.
    private func end(_ info: SessionInfo, time: Double, summary: SessionSummary, described: String?) {
        let id = info.id
        self.withSession(id) { session, shard in
            Self.end(session, time: time, summary: summary, described: described)
            if session.followers > 0 { self.sendFresh(session, to: id) }
            self.broadcast(session.summary)
            shard.recent.append(id)
            if shard.recent.count > self.limits.recentSessions {
                let over = shard.recent.count - self.limits.recentSessions
                for gone in shard.recent.prefix(over) { shard.sessions.removeValue(forKey: gone) }
                shard.recent.removeFirst(over)
            }
        }
    }

    private static func end(_ session: Session, time: Double, summary: SessionSummary, described: String?) {
        session.end = (time, summary, described)
        session.summary.ended = time
        session.summary.ending = summary.ending ?? "closed"
        session.summary.state = summary.finalState
        session.summary.clientOctets = summary.clientOctets
        session.summary.serverOctets = summary.serverOctets
        session.summary.commands = summary.commands
        session.summary.anomalies = summary.anomalies
    }

    // MARK: - Inside a shard's lock

    private func broadcast(_ summary: Summary) {
        guard self.viewerTotal.load(ordering: .relaxed) > 0 else { return }
        let message = Message(event: "session", data: summary.json)
        self.viewers.withLockedValue { viewers in
            for viewer in viewers.all.values { viewer.send(message) }
        }
    }

    /// Renders a followed session's new records and sends them to its followers.
    private func sendFresh(_ session: Session, to id: String) {
        let fresh = Self.render(session, limit: self.limits.recordsPerSession)
        guard !fresh.isEmpty else { return }
        self.viewers.withLockedValue { viewers in
            for viewer in viewers.all.values where viewer.follow == id {
                for record in fresh { viewer.send(Message(event: "record", data: record)) }
            }
        }
    }

    /// Renders what is pending (the start, the events, the end once it came); returns the records made. Only
    /// for someone who reads them: a session nobody looks at is never rendered.
    private static func render(_ session: Session, limit: Int) -> [String] {
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
        if let (time, summary, described) = session.end {
            session.end = nil
            fresh += session.renderer.end(time: time, summary: described ?? summary.description)
        }
        guard !fresh.isEmpty else { return [] }
        Self.keep(fresh, in: session, limit: limit)
        return fresh
    }

    private static func keep(_ records: [String], in session: Session, limit: Int) {
        session.records += records
        let over = session.records.count - limit
        if over > 0 {
            session.records.removeFirst(over)
            session.droppedRecords += over
        }
    }
}
