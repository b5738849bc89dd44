import ArgumentParser
import Logging
import POP3Core

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension LogFormat: ExpressibleByArgument {}

/// `--log-format json`: one JSON object a line on standard error, for log shippers. The keys: `time` (UTC,
/// milliseconds), `level`, `label`, `message`, then the metadata's own keys (`session`, `client`, …) as strings.
/// A key of the metadata that would shadow one of the four is prefixed with `meta_`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) {
        self.label = label
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = self.metadata
        if let provided = self.metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra = event.metadata { all.merge(extra) { _, new in new } }
        Terminal.shared.error(
            Self.line(
                time: Date().timeIntervalSince1970,
                level: event.level,
                label: self.label,
                message: "\(event.message)",
                metadata: all
            )
        )
    }

    static func line(
        time: Double,
        level: Logger.Level,
        label: String,
        message: String,
        metadata: Logger.Metadata
    ) -> String {
        var out = "{\"time\":"
        TranscriptRecord.appendQuoted(TranscriptRecord.timestamp(time), to: &out)
        out += ",\"level\":"
        TranscriptRecord.appendQuoted(level.rawValue, to: &out)
        out += ",\"label\":"
        TranscriptRecord.appendQuoted(label, to: &out)
        out += ",\"message\":"
        TranscriptRecord.appendQuoted(message, to: &out)
        for key in metadata.keys.sorted() {
            let name = ["time", "level", "label", "message"].contains(key) ? "meta_" + key : key
            out += ","
            TranscriptRecord.appendQuoted(name, to: &out)
            out += ":"
            TranscriptRecord.appendQuoted("\(metadata[key]!)", to: &out)
        }
        return out + "}"
    }
}
