import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The open sessions, so that shutdown can wait for their end records and end the ones left.
public final class SessionRegistry: Sendable {
    private struct State {
        var channels: [Int: any Channel] = [:]
        /// Called once the last open session has ended.
        var waiters: [@Sendable () -> Void] = []
    }

    private let state = NIOLockedValueBox(State())
    private let inMemory = NIOLockedValueBox(0)
    /// Times the descriptors ran out, and when that was last logged.
    private let exhaustion = NIOLockedValueBox((count: 0, logged: NIODeadline?.none))

    public init() {}

    func add(_ id: Int, _ channel: any Channel) {
        self.state.withLockedValue { $0.channels[id] = channel }
    }

    func remove(_ id: Int) {
        let waiters = self.state.withLockedValue { state -> [@Sendable () -> Void] in
            state.channels.removeValue(forKey: id)
            guard state.channels.isEmpty else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter() }
    }

    public var count: Int { self.state.withLockedValue { $0.channels.count } }

    /// Sessions whose state is still in memory: the open ones, and ended ones not yet freed. Once every
    /// session has ended, it falls to zero; a session that stays behind is a leak.
    public var sessionsInMemory: Int { self.inMemory.withLockedValue { $0 } }

    func sessionCreated() { self.inMemory.withLockedValue { $0 += 1 } }
    func sessionReleased() { self.inMemory.withLockedValue { $0 -= 1 } }

    /// How often the gateway ran out of file descriptors (accepting, or connecting upstream).
    public var descriptorExhaustions: Int { self.exhaustion.withLockedValue { $0.count } }

    /// Counts a time the descriptors ran out, and logs it at most once every 10 seconds.
    func descriptorsExhausted(logger: Logger) {
        let now = NIODeadline.now()
        let (count, log) = self.exhaustion.withLockedValue { state -> (Int, Bool) in
            state.count += 1
            guard state.logged.map({ now - $0 >= .seconds(10) }) ?? true else { return (state.count, false) }
            state.logged = now
            return (state.count, true)
        }
        guard log else { return }
        logger.error(
            "out of file descriptors (\(count) time\(count == 1 ? "" : "s") so far): raise the limit (ulimit -n) or lower max-connections; this is logged at most every 10 s"
        )
    }

    /// Waits until every session has ended or `timeout` has passed; returns whether all ended.
    public func waitUntilEmpty(timeout: TimeAmount) async -> Bool {
        let promise = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
        let empty = self.state.withLockedValue { state -> Bool in
            guard !state.channels.isEmpty else { return true }
            state.waiters.append { promise.succeed() }
            return false
        }
        if empty {
            promise.succeed()
            return true
        }
        let ended = await RelayServer.wait(for: promise.futureResult, timeout: timeout)
        promise.succeed()  // NIO wants every promise completed; a second completion is ignored
        return ended
    }

    /// Ends every open session now: both connections close, no QUIT goes upstream.
    public func endAll() {
        let channels = self.state.withLockedValue { Array($0.channels.values) }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(RelayShutdownEvent())
        }
    }
}
