import Logging
import NIOConcurrencyHelpers
import PopgateTestSupport
import Testing

@testable import POP3Relay

@Suite("Session registry")
struct SessionRegistryTests {
    @Test("running out of descriptors is counted every time and logged at most once in 10 seconds")
    func exhaustion() {
        let messages = NIOLockedValueBox<[String]>([])
        let logger = CapturingLogHandler.logger(messages)
        let registry = SessionRegistry()
        for _ in 0..<5 { registry.descriptorsExhausted(logger: logger) }
        #expect(registry.descriptorExhaustions == 5)
        #expect(messages.withLockedValue { $0.count } == 1)
        #expect(
            messages.withLockedValue { $0.first?.hasPrefix("error: out of file descriptors (1 time so far)") } == true
        )
    }
}
