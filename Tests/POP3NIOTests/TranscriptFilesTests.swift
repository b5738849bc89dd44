import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import PopgateTestSupport
import Testing

@testable import POP3NIO

/// A directory of its own, removed by the caller.
func scratchDirectory(_ name: String) -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: directory)
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    return directory
}

/// Descriptors this process holds on files in `directory` (other tests run beside this one, so only these count).
func descriptors(in directory: String) -> Int {
    let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return fds.filter { fd in
        ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "").hasPrefix(
            directory + "/"
        )
    }.count
}

private func summary() -> SessionSummary {
    SessionSummary(clientOctets: 0, serverOctets: 0, commands: 0, anomalies: 0, finalState: .closed)
}

@Suite("Transcript files and the output writer")
struct TranscriptFilesTests {
    @Test(
        "a file that cannot be written is logged once, then counted; the session's other file and other sessions are written"
    )
    func cannotOpen() throws {
        let directory = scratchDirectory("tf")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let messages = NIOLockedValueBox<[String]>([])
        let logger = CapturingLogHandler.logger(messages)
        let files = try TranscriptFiles(directory: directory, bodies: false, logger: logger)
        // A directory where a file must go: open(2) fails with EISDIR, as root too.
        for id in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(id).txt", withIntermediateDirectories: true)
        }
        for id in ["a", "b", "c"] {
            let session = SessionInfo(id: id, client: "127.0.0.1:1", server: "127.0.0.1:110")
            files.sessionStarted(session, time: 0)
            files.events([.annotation(.client, "hello")], session: session, time: 1)
            files.sessionEnded(session, time: 2, summary: summary())
        }
        files.flush()
        #expect(files.writer.failedFiles == 2)
        let logged = messages.withLockedValue { $0 }
        #expect(logged.count == 1)
        #expect(logged.first?.hasPrefix("error: cannot write \(directory)/") == true)
        #expect(logged.first?.contains("Is a directory") == true)
        #expect(try String(contentsOfFile: "\(directory)/a.jsonl", encoding: .utf8).contains("session-end"))
        #expect(try String(contentsOfFile: "\(directory)/c.txt", encoding: .utf8).contains("hello"))
    }

    @Test("a transcript grows while its session is open: on disk within the interval, without a flush or an end")
    func growsWhileOpen() async throws {
        let directory = scratchDirectory("grow")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = OutputWriter(limits: .init(interval: 0.2))
        let files = try TranscriptFiles(directory: directory, bodies: false, writer: writer)
        let session = SessionInfo(id: "s", client: "127.0.0.1:1", server: "127.0.0.1:110")
        files.sessionStarted(session, time: 0)
        files.events([.annotation(.client, "first")], session: session, time: 1)
        try await Task.sleep(for: .milliseconds(600))
        let text = try String(contentsOfFile: "\(directory)/s.txt", encoding: .utf8)
        #expect(text.contains("── session s") && text.contains("first"))
        files.events([.annotation(.client, "second")], session: session, time: 2)
        try await Task.sleep(for: .milliseconds(600))
        #expect(try String(contentsOfFile: "\(directory)/s.jsonl", encoding: .utf8).contains("second"))
        #expect(try String(contentsOfFile: "\(directory)/s.txt", encoding: .utf8).hasPrefix(text))
        files.sessionEnded(session, time: 3, summary: summary())
        files.flush()
        #expect(try String(contentsOfFile: "\(directory)/s.txt", encoding: .utf8).contains("end of session s"))
    }

    @Test("open sessions hold no descriptor for their files, however many")
    func noDescriptorWhileIdle() throws {
        let directory = scratchDirectory("fds")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = try TranscriptFiles(directory: directory, bodies: false)
        let sessions = (0..<300).map { SessionInfo(id: "s\($0)", client: "127.0.0.1:1", server: "127.0.0.1:110") }
        for session in sessions {
            files.sessionStarted(session, time: 0)
            files.events([.annotation(.client, "hello")], session: session, time: 1)
        }
        files.flush()
        // The files are on disk, and none is held open.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).count == 600)
        #expect(descriptors(in: directory) == 0)
        for session in sessions { files.sessionEnded(session, time: 2, summary: summary()) }
        files.flush()
        #expect(try String(contentsOfFile: "\(directory)/s299.txt", encoding: .utf8).contains("end of session s299"))
    }

    @Test("a file the disk falls behind on ends with its note, is logged, takes nothing more; memory stays bounded")
    func fallsBehind() throws {
        let directory = scratchDirectory("behind")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let messages = NIOLockedValueBox<[String]>([])
        let logger = CapturingLogHandler.logger(messages)
        let writer = OutputWriter(limits: .init(total: 1 << 20), logger: logger)
        let slow = writer.open(directory + "/slow", note: { ByteBuffer(string: "[stopped: \($0)]") })
        let other = writer.open(directory + "/other", note: { ByteBuffer(string: "[stopped: \($0)]") })
        // The disk stalls: nothing is written while the queue is held.
        writer.queue.suspend()
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 << 10)
        var taken = 0
        for _ in 0..<100 where slow.append(chunk) { taken += 1 }
        #expect(taken == 16)
        #expect(writer.unwrittenOctets < (1 << 20) + 200)
        #expect(!slow.append(ByteBuffer(string: "later")))
        #expect(writer.stoppedFiles == 1)
        // The others stop too, for the total is spent.
        #expect(!other.append(chunk))
        writer.queue.resume()
        slow.close()
        writer.flush()
        let written = try String(contentsOfFile: directory + "/slow", encoding: .utf8)
        #expect(written.hasPrefix(String(repeating: "x", count: 16 << 16)))
        #expect(written.hasSuffix("[stopped: the disk is 1048576 octets behind on this file (the limit is 1048576)]"))
        #expect(!written.contains("later"))
        #expect(writer.unwrittenOctets == 0)
        let logged = messages.withLockedValue { $0 }
        #expect(logged.contains { $0.hasPrefix("warning: output to \(directory)/slow stops here: the disk is") })
    }

    @Test("files closed together are written together, soon after: one wake-up of the writer, not one each")
    func closesShareAWrite() async throws {
        let directory = scratchDirectory("closes")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = OutputWriter()
        for index in 0..<200 {
            let file = writer.open(directory + "/f\(index)", note: { _ in ByteBuffer() })
            file.append(ByteBuffer(string: "line \(index)\n"))
            file.close()
        }
        // Well within the interval (1 s), without a flush: written because they were closed.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).count == 200)
        #expect(try String(contentsOfFile: directory + "/f199", encoding: .utf8) == "line 199\n")
        #expect(writer.drains <= 3, "\(writer.drains) wake-ups for 200 closes")
    }

    @Test("a file with nothing in it is still made when it is closed")
    func emptyFileMade() throws {
        let directory = scratchDirectory("empty")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = OutputWriter()
        writer.open(directory + "/nothing", note: { _ in ByteBuffer() }).close()
        writer.flush()
        #expect(FileManager.default.fileExists(atPath: directory + "/nothing"))
    }
}
