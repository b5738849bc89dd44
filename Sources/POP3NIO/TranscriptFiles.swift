import Dispatch
import Logging
import NIOConcurrencyHelpers
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// Writes each session's transcript to two files in a directory: `ID.txt` (annotated text) and `ID.jsonl`
/// (JSON lines, schema version 1). Rendering happens on the caller's thread; the disk is written from a
/// serial queue, so event loops never block on it. Files are flushed when a session ends and by ``flush()``.
public final class TranscriptFiles: ConversationSink {
    private struct Open {
        var text: TranscriptRenderer
        var json: TranscriptRenderer
        var textFile: Int32
        var jsonFile: Int32
        var textBuffer: [UInt8] = []
        var jsonBuffer: [UInt8] = []
    }

    private let directory: String
    private let bodies: Bool
    private let sessions = NIOLockedValueBox<[String: Open]>([:])
    private let queue = DispatchQueue(label: "popgate.transcripts")
    private let flushThreshold = 64 * 1024

    /// Creates the directory if needed and checks that it can be written.
    private let logger: Logger?
    private let failures = NIOLockedValueBox(0)

    /// Creates the directory if needed and checks that it can be written. `logger` hears of the first session
    /// whose files cannot be opened; later ones are counted (``failedSessions``).
    public init(directory: String, bodies: Bool, logger: Logger? = nil) throws {
        self.directory = directory
        self.bodies = bodies
        self.logger = logger
        try OutputFiles.prepare(directory, for: "transcript directory")
    }

    /// Sessions that got no transcript because their files could not be opened.
    public var failedSessions: Int { self.failures.withLockedValue { $0 } }

    public func sessionStarted(_ session: SessionInfo, time: Double) {
        let base = self.directory + "/" + session.id
        let flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC
        let textFile = open(base + ".txt", flags, 0o640)
        let textError = errno
        let jsonFile = open(base + ".jsonl", flags, 0o640)
        let jsonError = errno
        guard textFile >= 0, jsonFile >= 0 else {
            if textFile >= 0 { close(textFile) }
            if jsonFile >= 0 { close(jsonFile) }
            let reason = String(cString: strerror(textFile < 0 ? textError : jsonError))
            let first = self.failures.withLockedValue { count in
                count += 1
                return count == 1
            }
            if first {
                self.logger?.error(
                    "cannot open the transcript of session \(session.id) in \(self.directory): \(reason); sessions without a transcript are counted from now on, not logged"
                )
            }
            return
        }
        var text = TranscriptRenderer(session: session.id, format: .text, showBodies: self.bodies)
        var json = TranscriptRenderer(session: session.id, format: .json, showBodies: self.bodies)
        var open = Open(text: text, json: json, textFile: textFile, jsonFile: jsonFile)
        Self.append(text.start(time: time, client: session.client, server: session.server), to: &open.textBuffer)
        Self.append(json.start(time: time, client: session.client, server: session.server), to: &open.jsonBuffer)
        open.text = text
        open.json = json
        self.sessions.withLockedValue { $0[session.id] = open }
    }

    public func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        let write: (Int32, [UInt8], Int32, [UInt8])? = self.sessions.withLockedValue { sessions in
            guard var open = sessions[session.id] else { return nil }
            for event in events {
                Self.append(open.text.render(event, time: time), to: &open.textBuffer)
                Self.append(open.json.render(event, time: time), to: &open.jsonBuffer)
            }
            defer { sessions[session.id] = open }
            guard open.textBuffer.count + open.jsonBuffer.count >= self.flushThreshold else { return nil }
            defer {
                open.textBuffer.removeAll(keepingCapacity: true)
                open.jsonBuffer.removeAll(keepingCapacity: true)
            }
            return (open.textFile, open.textBuffer, open.jsonFile, open.jsonBuffer)
        }
        if let (tf, tb, jf, jb) = write {
            self.queue.async {
                Self.writeAll(tf, tb)
                Self.writeAll(jf, jb)
            }
        }
    }

    public func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        guard var open = self.sessions.withLockedValue({ $0.removeValue(forKey: session.id) }) else { return }
        Self.append(open.text.end(time: time, summary: summary.description), to: &open.textBuffer)
        Self.append(open.json.end(time: time, summary: summary.description), to: &open.jsonBuffer)
        let finished = open
        self.queue.async {
            Self.writeAll(finished.textFile, finished.textBuffer)
            Self.writeAll(finished.jsonFile, finished.jsonBuffer)
            close(finished.textFile)
            close(finished.jsonFile)
        }
    }

    /// Writes what every open session has so far and waits until the disk has it.
    public func flush() {
        let pending = self.sessions.withLockedValue { sessions -> [(Int32, [UInt8], Int32, [UInt8])] in
            var out: [(Int32, [UInt8], Int32, [UInt8])] = []
            for (id, var open) in sessions {
                out.append((open.textFile, open.textBuffer, open.jsonFile, open.jsonBuffer))
                open.textBuffer.removeAll(keepingCapacity: true)
                open.jsonBuffer.removeAll(keepingCapacity: true)
                sessions[id] = open
            }
            return out
        }
        self.queue.sync {
            for (tf, tb, jf, jb) in pending {
                Self.writeAll(tf, tb)
                Self.writeAll(jf, jb)
            }
        }
    }

    private static func append(_ lines: [String], to buffer: inout [UInt8]) {
        for line in lines {
            buffer.append(contentsOf: line.utf8)
            buffer.append(0x0A)
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { OutputFiles.writeAll(fd, $0) }
    }
}

/// Hands every call to several sinks: live output and files, say.
public struct SinkFanOut: ConversationSink {
    public let sinks: [any ConversationSink]

    public init(_ sinks: [any ConversationSink]) { self.sinks = sinks }

    public func sessionStarted(_ session: SessionInfo, time: Double) {
        for sink in self.sinks { sink.sessionStarted(session, time: time) }
    }

    public func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        for sink in self.sinks { sink.events(events, session: session, time: time) }
    }

    public func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        for sink in self.sinks { sink.sessionEnded(session, time: time, summary: summary) }
    }
}
