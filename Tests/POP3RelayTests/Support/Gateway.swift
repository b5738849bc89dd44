import Logging
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import POP3NIO

@testable import POP3Relay

/// Keeps every event of every session, by session id.
final class RecordingSink: ConversationSink {
    let events = NIOLockedValueBox<[String: [ConversationEvent]]>([:])
    let ended = NIOLockedValueBox<[String: SessionSummary]>([:])

    func sessionStarted(_ session: SessionInfo, time: Double) {}
    func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        self.events.withLockedValue { $0[session.id, default: []] += events }
    }
    func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        self.ended.withLockedValue { $0[session.id] = summary }
    }

    var allEvents: [ConversationEvent] { self.events.withLockedValue { $0.values.flatMap { $0 } } }
    var anomalies: [Anomaly] { self.allEvents.compactMap { if case .anomaly(let a) = $0 { a } else { nil } } }

    /// What the sessions that have not ended last did: for a failure's message.
    var unended: String {
        let ended = self.ended.withLockedValue { Set($0.keys) }
        return self.events.withLockedValue { events in
            events.filter { !ended.contains($0.key) }.map { id, list in
                "\(id): " + list.suffix(6).map { "\($0)" }.joined(separator: " | ")
            }.joined(separator: "\n")
        }
    }

    /// Waits until `count` sessions have ended.
    func waitForEnded(_ count: Int, seconds: Double = 10) async {
        for _ in 0..<Int(seconds * 50) where self.ended.withLockedValue({ $0.count }) < count {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// The gateway in this process, on a free loopback port, in front of `upstream`.
struct Gateway {
    let server: RelayServer
    let sink: RecordingSink
    var port: Int { self.server.boundAddresses.first?.port ?? 0 }

    static func start(
        upstreamPort: Int,
        upstreamHost: String = "127.0.0.1",
        adjust: (inout RelayConfiguration) -> Void = { _ in }
    ) async throws -> Gateway {
        var configuration = RelayConfiguration()
        configuration.listeners = [
            .init(
                listen: [Endpoint(host: "127.0.0.1", port: 0)],
                upstream: Endpoint(host: upstreamHost, port: upstreamPort)
            )
        ]
        configuration.shutdownGrace = .milliseconds(200)
        adjust(&configuration)
        let sink = RecordingSink()
        var logger = Logger(label: "popgate-test")
        logger.logLevel = .critical
        let server = try RelayServer(configuration: configuration, sinks: [sink], logger: logger)
        try await server.bind()
        return Gateway(server: server, sink: sink)
    }

    func stop() async { await self.server.shutdown() }
}
