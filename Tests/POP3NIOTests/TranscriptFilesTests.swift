import Foundation
import Logging
import NIOConcurrencyHelpers
import POP3Core
import Testing

@testable import POP3NIO

/// Keeps the messages logged.
struct CapturingLogHandler: LogHandler {
    let messages: NIOLockedValueBox<[String]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        self.messages.withLockedValue { $0.append("\(event.level): \(event.message)") }
    }
}

@Suite("Transcript files")
struct TranscriptFilesTests {
    @Test("a session whose files cannot be opened is logged once, then counted; other sessions keep theirs")
    func cannotOpen() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-tf-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let messages = NIOLockedValueBox<[String]>([])
        let logger = Logger(label: "test") { _ in CapturingLogHandler(messages: messages) }
        let files = try TranscriptFiles(directory: directory, bodies: false, logger: logger)
        // A directory where a file must go: open(2) fails with EISDIR, as root too.
        for id in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(id).txt", withIntermediateDirectories: true)
        }
        for id in ["a", "b", "c"] {
            let session = SessionInfo(id: id, client: "127.0.0.1:1", server: "127.0.0.1:110")
            files.sessionStarted(session, time: 0)
            files.events([.annotation(.client, "hello")], session: session, time: 1)
            files.sessionEnded(
                session,
                time: 2,
                summary: SessionSummary(
                    clientOctets: 0,
                    serverOctets: 0,
                    commands: 0,
                    anomalies: 0,
                    finalState: .closed
                )
            )
        }
        files.flush()
        #expect(files.failedSessions == 2)
        let logged = messages.withLockedValue { $0 }
        #expect(logged.count == 1)
        #expect(logged.first?.hasPrefix("error: cannot open the transcript of session a in \(directory)") == true)
        #expect(logged.first?.contains("Is a directory") == true)
        // The .jsonl of the failed ones is not left half-made, and the good session has both files.
        #expect(
            !FileManager.default.fileExists(atPath: "\(directory)/a.jsonl")
                || (try? String(contentsOfFile: "\(directory)/a.jsonl", encoding: .utf8)) == ""
        )
        #expect(try String(contentsOfFile: "\(directory)/c.txt", encoding: .utf8).contains("hello"))
    }
}
