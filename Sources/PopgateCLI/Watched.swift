import Logging
import POP3Live

/// What `--http` shows: the sessions board and the metrics, fed by the gateway as sinks.
struct Watched: Sendable {
    let board: LiveBoard
    let metrics: GatewayMetrics

    init(names: [String], limits: LiveBoard.Limits = .init()) {
        self.board = LiveBoard(limits: limits)
        self.metrics = GatewayMetrics(listeners: names)
    }
}

/// `--log-format`.
enum LogFormat: String, CaseIterable, Sendable {
    case text
    case json

    static func bootstrap(_ format: LogFormat, level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}
