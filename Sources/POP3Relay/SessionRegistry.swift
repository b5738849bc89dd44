import NIOConcurrencyHelpers
import NIOCore

/// The open sessions, so that shutdown can wait for them and then end them.
public final class SessionRegistry: Sendable {
    private let channels = NIOLockedValueBox<[String: any Channel]>([:])
    private let inMemory = NIOLockedValueBox(0)

    public init() {}

    func add(_ id: String, _ channel: any Channel) {
        self.channels.withLockedValue { $0[id] = channel }
    }

    func remove(_ id: String) {
        self.channels.withLockedValue { _ = $0.removeValue(forKey: id) }
    }

    public var count: Int { self.channels.withLockedValue { $0.count } }

    /// Sessions whose state is still in memory: the open ones, and ended ones not yet freed. Once every
    /// session has ended, it falls to zero; a session that stays behind is a leak.
    public var sessionsInMemory: Int { self.inMemory.withLockedValue { $0 } }

    func sessionCreated() { self.inMemory.withLockedValue { $0 += 1 } }
    func sessionReleased() { self.inMemory.withLockedValue { $0 -= 1 } }

    /// Waits until every session has ended or `timeout` has passed; returns whether all ended.
    public func waitUntilEmpty(timeout: TimeAmount) async -> Bool {
        let deadline = NIODeadline.now() + timeout
        while self.count > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.count == 0
    }

    /// Ends every open session now: both connections close, no QUIT goes upstream.
    public func endAll() {
        let channels = self.channels.withLockedValue { Array($0.values) }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(RelayShutdownEvent())
        }
    }
}
