import Logging
import NIOConcurrencyHelpers
import Testing

@testable import POP3Relay

/// Keeps the messages logged.
struct KeepingLogHandler: LogHandler {
    let messages: NIOLockedValueBox<[String]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) { self.messages.withLockedValue { $0.append("\(event.message)") } }
}

@Suite("Session registry")
struct SessionRegistryTests {
    @Test("running out of descriptors is counted every time and logged at most once in 10 seconds")
    func exhaustion() {
        let messages = NIOLockedValueBox<[String]>([])
        let logger = Logger(label: "test") { _ in KeepingLogHandler(messages: messages) }
        let registry = SessionRegistry()
        for _ in 0..<5 { registry.descriptorsExhausted(logger: logger) }
        #expect(registry.descriptorExhaustions == 5)
        #expect(messages.withLockedValue { $0.count } == 1)
        #expect(messages.withLockedValue { $0.first?.hasPrefix("out of file descriptors (1 time so far)") } == true)
    }
}
