import Logging
import NIOConcurrencyHelpers

/// Keeps every message logged, as "level: message", for tests that check what the log says.
public struct CapturingLogHandler: LogHandler {
    public let messages: NIOLockedValueBox<[String]>
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public init(messages: NIOLockedValueBox<[String]>) { self.messages = messages }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        self.messages.withLockedValue { $0.append("\(event.level): \(event.message)") }
    }

    /// A logger whose messages go to `messages`.
    public static func logger(_ messages: NIOLockedValueBox<[String]>) -> Logger {
        Logger(label: "test") { _ in CapturingLogHandler(messages: messages) }
    }
}
