import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// `popgate bench`: concurrent POP3 sessions against any server or gateway, bounded in count and in time.
public enum BenchRunner {
    public enum Workload: String, Sendable, CaseIterable {
        /// Connect, greeting, USER, PASS, STAT, LIST, optional RETR, QUIT: N sessions, C at a time.
        case sessions
        /// One logged-in session per worker retrieving one message again and again: MB/s.
        case retr
        /// C logged-in sessions held for a time, then NOOP and QUIT each.
        case idle
    }

    public enum TLSMode: String, Sendable, CaseIterable {
        case none
        /// TLS from the first octet (POP3S).
        case implicit
        /// STLS, then TLS, then the login.
        case starttls
    }

    public struct Options: Sendable {
        public var host: String
        public var port: Int
        public var workload = Workload.sessions
        /// `sessions`: the sessions in all. The run also stops at `duration`.
        public var sessions = 1000
        /// Sessions at once; each worker has its own maildrop (`{n}` in `user` is its number), so POP3's
        /// maildrop locks never collide.
        public var concurrency = 10
        /// Seconds the run may take at most; `retr` runs for all of it, `idle` holds for `hold`.
        public var duration = 30.0
        public var user = "bench{n}"
        public var password = "bench-password"
        /// `sessions`: RETR this message too. `retr`: the message retrieved.
        public var retr: Int?
        public var tls = TLSMode.none
        /// The name the server's certificate must hold (and the SNI); verification is off without `verify`.
        public var serverName: String?
        public var verify = false
        public var caFile: String?
        /// The source address to connect from.
        public var bind: String?
        /// Seconds to wait for any one reply.
        public var timeout = 10.0
        /// `idle`: seconds the sessions are held once all are logged in.
        public var hold = 10.0
        /// Handlers to add in front of each connection (a PROXY header writer, say).
        public var prepare: (@Sendable (any Channel) throws -> Void)?

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        func user(_ worker: Int) -> String { self.user.replacingOccurrences(of: "{n}", with: String(worker)) }
        func password(_ worker: Int) -> String {
            self.password.replacingOccurrences(of: "{n}", with: String(worker))
        }
    }

    /// What a worker gathered; merged at the end, so workers share nothing while they run.
    struct Tally: Sendable {
        var completed = 0
        var failed = 0
        var errors: [String: Int] = [:]
        var octets = 0
        var session = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var command = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)

        mutating func add(_ other: Tally) {
            self.completed += other.completed
            self.failed += other.failed
            for (kind, count) in other.errors { self.errors[kind, default: 0] += count }
            self.octets += other.octets
            self.session.add(other.session)
            self.command.add(other.command)
        }
    }

    /// Where a run is, for a progress line.
    public struct Progress: Sendable {
        public var completed: Int
        public var failed: Int
        public var seconds: Double
        public var octets: Int
    }

    public static func run(
        _ options: Options,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        progress: (@Sendable (Progress) -> Void)? = nil
    ) async throws -> BenchReport {
        let tls = try Self.tlsContext(options)
        let start = NIODeadline.now()
        let deadline = start + .nanoseconds(Int64(options.duration * 1e9))
        let counters = NIOLockedValueBox((started: 0, completed: 0, failed: 0, octets: 0))
        let ticker = progress.map { report in
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let now = counters.withLockedValue { $0 }
                    report(
                        Progress(
                            completed: now.completed,
                            failed: now.failed,
                            seconds: Double((NIODeadline.now() - start).nanoseconds) / 1e9,
                            octets: now.octets
                        )
                    )
                }
            }
        }
        defer { ticker?.cancel() }
        // `idle`: every session logged in, then all released together after the hold; at the run's end whatever.
        let holding = HoldGate(count: options.concurrency)
        holding.setHold(options.hold)
        let watchdog = Task {
            try? await Task.sleep(for: .nanoseconds(Int64(options.duration * 1e9)))
            holding.releaseNow()
        }
        defer { watchdog.cancel() }
        var total = Tally()
        try await withThrowingTaskGroup(of: Tally.self) { group2 in
            for worker in 0..<options.concurrency {
                group2.addTask {
                    var tally = Tally()
                    while NIODeadline.now() < deadline {
                        if options.workload == .sessions {
                            let go = counters.withLockedValue { state -> Bool in
                                guard state.started < options.sessions else { return false }
                                state.started += 1
                                return true
                            }
                            guard go else { break }
                        }
                        let result = await Self.session(
                            worker: worker,
                            options: options,
                            tls: tls,
                            group: group,
                            deadline: deadline,
                            holding: options.workload == .idle ? holding : nil
                        )
                        tally.octets += result.octets
                        for nanoseconds in result.commands {
                            _ = tally.command.record(UInt64(max(1, nanoseconds / 1000)))
                        }
                        switch result.outcome {
                        case .completed:
                            tally.completed += 1
                            _ = tally.session.record(UInt64(max(1, result.nanoseconds / 1000)))
                        case .failed(let why):
                            tally.failed += 1
                            tally.errors[Self.kind(why), default: 0] += 1
                        }
                        counters.withLockedValue {
                            if case .completed = result.outcome { $0.completed += 1 } else { $0.failed += 1 }
                            $0.octets += result.octets
                        }
                        // `retr` and `idle`: one session a worker.
                        if options.workload != .sessions { break }
                    }
                    return tally
                }
            }
            for try await tally in group2 { total.add(tally) }
        }
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return BenchReport(options: options, tally: total, seconds: seconds)
    }

    /// An error's kind: what it says before any detail, so that errors count by kind, not by text.
    static func kind(_ why: String) -> String {
        let head = why.firstIndex(of: ":").map { String(why[..<$0]) } ?? why
        guard head == "connect" else { return head }
        let text = why.lowercased()
        if text.contains("refused") { return "connect: refused" }
        if text.contains("timeout") || text.contains("timed out") { return "connect: timeout" }
        return "connect: failed"
    }

    static func tlsContext(_ options: Options) throws -> NIOSSLContext? {
        guard options.tls != .none else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if options.verify {
            if let file = options.caFile { configuration.trustRoots = .file(file) }
        } else {
            configuration.certificateVerification = .none
        }
        return try NIOSSLContext(configuration: configuration)
    }

    struct SessionResult: Sendable {
        var outcome: BenchClient.Outcome
        var nanoseconds: Int64 = 0
        var commands: [Int64] = []
        var octets = 0
    }

    /// One session, from connect to close.
    static func session(
        worker: Int,
        options: Options,
        tls: NIOSSLContext?,
        group: any EventLoopGroup,
        deadline: NIODeadline,
        holding: HoldGate?
    ) async -> SessionResult {
        var script = BenchClient.Script(user: options.user(worker), password: options.password(worker))
        script.starttls = options.tls == .starttls
        switch options.workload {
        case .sessions:
            script.commands = [.stat, .list] + (options.retr.map { [.retr($0)] } ?? [])
        case .retr:
            script.repeatRetr = options.retr ?? 1
        case .idle:
            script.holdAfterLogin = true
            script.commands = [.noop, .stat]
        }
        let started = NIODeadline.now()
        let loop = group.next()
        let promise = loop.makePromise(of: SessionResult.self)
        let client = BenchClient(script: script, more: { NIODeadline.now() < deadline })
        let left = NIOLockedValueBox(false)
        let leave: @Sendable () -> Void = {
            let first = left.withLockedValue { value -> Bool in
                defer { value = true }
                return !value
            }
            if first, let holding { holding.gone() }
        }
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(Int64(options.timeout * 1e9)))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try options.prepare?(channel)
                    if options.tls == .implicit, let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls, serverHostname: options.serverName)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        BenchHandler(
                            client: client,
                            tls: options.tls == .starttls ? tls : nil,
                            serverName: options.serverName,
                            timeout: .nanoseconds(Int64(options.timeout * 1e9)),
                            holding: holding,
                            leave: leave,
                            promise: promise
                        )
                    )
                }
            }
        if let bind = options.bind {
            do {
                bootstrap = try bootstrap.bind(to: SocketAddress(ipAddress: bind, port: 0))
            } catch {
                return SessionResult(outcome: .failed("bind: \(bind): \(error)"))
            }
        }
        do {
            _ = try await bootstrap.connect(host: options.host, port: options.port).get()
        } catch {
            promise.fail(error)
            leave()
            return SessionResult(outcome: .failed("connect: \(error)"))
        }
        do {
            var result = try await promise.futureResult.get()
            result.nanoseconds = (NIODeadline.now() - started).nanoseconds
            return result
        } catch {
            return SessionResult(outcome: .failed("connection: \(error)"))
        }
    }
}

/// `idle`: holds every logged-in session until all are (or have failed), then for `hold` seconds.
final class HoldGate: Sendable {
    private let state: NIOLockedValueBox<(waiting: Int, released: Bool, waiters: [@Sendable () -> Void])>
    private let hold = NIOLockedValueBox(10.0)

    init(count: Int) {
        self.state = NIOLockedValueBox((count, false, []))
    }

    /// A session logged in: `release` is called once all have.
    func arrived(release: @escaping @Sendable () -> Void) {
        let ready = self.state.withLockedValue { state -> [@Sendable () -> Void]? in
            state.waiters.append(release)
            state.waiting -= 1
            return state.waiting <= 0 ? state.waiters : nil
        }
        if let ready { self.releaseAll(ready) }
    }

    /// A session that will never arrive.
    func gone() {
        let ready = self.state.withLockedValue { state -> [@Sendable () -> Void]? in
            state.waiting -= 1
            return state.waiting <= 0 && !state.released ? state.waiters : nil
        }
        if let ready { self.releaseAll(ready) }
    }

    func setHold(_ seconds: Double) { self.hold.withLockedValue { $0 = seconds } }

    /// The run's time is up: whoever waits goes on now.
    func releaseNow() {
        self.hold.withLockedValue { $0 = 0 }
        self.releaseAll(self.state.withLockedValue { $0.waiters })
    }

    private func releaseAll(_ waiters: [@Sendable () -> Void]) {
        let first = self.state.withLockedValue { state -> Bool in
            defer { state.released = true }
            return !state.released
        }
        guard first else { return }
        let seconds = self.hold.withLockedValue { $0 }
        Task {
            try? await Task.sleep(for: .nanoseconds(Int64(seconds * 1e9)))
            for waiter in waiters { waiter() }
        }
    }
}
