import Logging
import NIOConcurrencyHelpers
import NIOCore
import POP3Core

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Writes each session's transcript to two files in a directory: `ID.txt` (annotated text) and `ID.jsonl`
/// (JSON lines, schema version 1). Rendering happens on the caller's thread; ``OutputWriter`` writes the
/// disk, in batches, at least once a second, so the files grow while the session goes and an idle session
/// holds no descriptor.
public final class TranscriptFiles: ConversationSink {
    private struct Open {
        var text: TranscriptRenderer
        var json: TranscriptRenderer
        var textFile: OutputWriter.File
        var jsonFile: OutputWriter.File
    }

    private let directory: String
    private let bodies: Bool
    private let sessions = NIOLockedValueBox<[String: Open]>([:])
    public let writer: OutputWriter

    /// Creates the directory if needed and checks that it can be written. The writer may be shared with
    /// other outputs; the default one logs to `logger`.
    public init(directory: String, bodies: Bool, writer: OutputWriter? = nil, logger: Logger? = nil) throws {
        self.directory = directory
        self.bodies = bodies
        self.writer = writer ?? OutputWriter(logger: logger)
        try OutputFiles.prepare(directory, for: "transcript directory")
    }

    public func sessionStarted(_ session: SessionInfo, time: Double) {
        let base = self.directory + "/" + session.id
        var text = TranscriptRenderer(session: session.id, format: .text, showBodies: self.bodies)
        var json = TranscriptRenderer(session: session.id, format: .json, showBodies: self.bodies)
        let open = Open(
            text: text,
            json: json,
            textFile: self.writer.open(base + ".txt", note: Self.note(text)),
            jsonFile: self.writer.open(base + ".jsonl", note: Self.note(json))
        )
        open.textFile.append(
            Self.bytes(
                text.start(
                    time: time,
                    client: session.client,
                    server: session.server,
                    via: session.via,
                    gateway: session.gateway
                )
            )
        )
        open.jsonFile.append(
            Self.bytes(
                json.start(
                    time: time,
                    client: session.client,
                    server: session.server,
                    via: session.via,
                    gateway: session.gateway
                )
            )
        )
        self.sessions.withLockedValue { $0[session.id] = open }
    }

    public func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        // Rendered outside the lock, which every session's events take: a session's calls come from its own
        // event loop one at a time, so its renderers are out of the table only while that loop renders.
        guard var open = self.sessions.withLockedValue({ $0.removeValue(forKey: session.id) }) else { return }
        // Each event's lines go to the buffer at once, so a long pipelined batch holds no array of strings.
        var text = ByteBuffer()
        var json = ByteBuffer()
        for event in events {
            open.text.render(event, time: time, into: &text)
            open.json.render(event, time: time, into: &json)
        }
        if text.readableBytes > 0 { open.textFile.append(text) }
        if json.readableBytes > 0 { open.jsonFile.append(json) }
        self.sessions.withLockedValue { $0[session.id] = open }
    }

    public func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        guard var open = self.sessions.withLockedValue({ $0.removeValue(forKey: session.id) }) else { return }
        open.textFile.append(Self.bytes(open.text.end(time: time, summary: summary.description)))
        open.jsonFile.append(Self.bytes(open.json.end(time: time, summary: summary.description)))
        open.textFile.close()
        open.jsonFile.close()
    }

    /// Writes what every session has so far and waits until the disk has it.
    public func flush() { self.writer.flush() }

    private static func note(_ renderer: TranscriptRenderer) -> @Sendable (String) -> ByteBuffer {
        { reason in Self.bytes(renderer.stopped(time: Date().timeIntervalSince1970, reason: reason)) }
    }

    private static func bytes(_ lines: [String]) -> ByteBuffer {
        var buffer = ByteBuffer()
        Self.write(lines, to: &buffer)
        return buffer
    }

    private static func write(_ lines: [String], to buffer: inout ByteBuffer) {
        for line in lines {
            buffer.writeString(line)
            buffer.writeInteger(UInt8(0x0A))
        }
    }
}

/// Hands every call to several sinks: live output and files, say.
public final class SinkFanOut: ConversationSink {
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

    public func userIdentified(_ user: String, session: SessionInfo) {
        for sink in self.sinks { sink.userIdentified(user, session: session) }
    }
}
