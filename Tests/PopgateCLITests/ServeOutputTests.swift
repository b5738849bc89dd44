import Foundation
import POP3Server
import PopgateTestSupport
import Testing

/// `popgate serve` with its outputs on (transcripts, pcap): what hostile input costs, what a session holds.
@Suite("popgate serve outputs", .timeLimit(.minutes(3)))
struct ServeOutputTests {
    /// The peak resident set size of a process so far, in bytes, from /proc.
    static func peakResident(of pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        return 0
    }

    /// Starts the gateway with every output on, in front of the embedded server; returns it, its port and the
    /// output directory.
    static func start(
        upstream: Int,
        extra: [String] = [],
        log: String
    ) async throws -> (ChildProcess, Int, String) {
        let directory = ServeProcessTests.temporary("outputs")
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(upstream)", "--transcripts", directory, "--pcap", directory + "/pcap"]
                + extra,
            log: log
        )
        return (process, port, directory)
    }

    @Test("a 128 MiB line with --pcap costs the gateway no memory of its size; the pcap keeps its prefix and length")
    func overlongLineWithPCAP() async throws {
        let upstream = try await EmbeddedPOP3Server.start(EmbeddedPOP3Server.Configuration())
        let log = ServeProcessTests.temporary("overlong-log")
        let (process, port, directory) = try await Self.start(upstream: upstream.port, log: log)
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        let octets = 128 << 20
        let script = """
            import socket, sys
            s = socket.create_connection(('127.0.0.1', \(port))); f = s.makefile('rb'); f.readline()
            chunk = b'x' * (1 << 20)
            s.sendall(b'NOOP ')
            for _ in range(128): s.sendall(chunk)
            s.sendall(b'\\r\\n'); print(f.readline().decode().strip())
            s.sendall(b'QUIT\\r\\n'); print(f.readline().decode().strip())
            """
        let before = Self.peakResident(of: process.pid)
        let replies = try await runTool("python3", ["-c", script])
        let peak = Self.peakResident(of: process.pid)
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        try await upstream.stop()

        #expect(replies.contains("-ERR line of \(octets + 7) octets is too long"), "\(replies)")
        print("popgate serve --pcap: peak resident memory grew by \(peak - before) bytes for a 128 MiB line")
        #expect(peak - before < 24 << 20, "grew by \(peak - before) bytes")
        let pcaps = try FileManager.default.contentsOfDirectory(atPath: directory + "/pcap")
        try #require(pcaps.count == 1)
        let path = directory + "/pcap/" + pcaps[0]
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size < 8192)
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
        #expect(text.contains("NOOP xxxx"))
        #expect(text.contains(" [popgate: \(octets + 7) octets in all; the rest is not recorded]\r\n"))
        // The file reads back whole: the line's answer and the QUIT after it are there.
        let (status, output) = try await InspectProcessTests.inspect([path])
        #expect(status == 0)
        #expect(output.contains("too long") && output.contains("QUIT"), "\(output)")
    }

    @Test("idle sessions with every output on hold their two sockets and no file; a transcript grows while open")
    func idleSessionsHoldNoFiles() async throws {
        let upstream = try await EmbeddedPOP3Server.start(EmbeddedPOP3Server.Configuration())
        let log = ServeProcessTests.temporary("idle-log")
        let (process, port, directory) = try await Self.start(upstream: upstream.port, log: log)
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        func descriptors() -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.pid)/fd").count) ?? 0
        }
        let base = descriptors()
        var clients: [RawSocket] = []
        for _ in 0..<200 {
            let client = try RawSocket(port: port)
            client.send("USER alice\r\n")
            clients.append(client)
        }
        // Every session is open, greeted, its USER answered; then it idles.
        for client in clients { #expect(await client.readUntil("+OK", seconds: 10).contains("+OK")) }
        try await Task.sleep(for: .milliseconds(1500))
        let held = descriptors() - base
        print("popgate serve with outputs: 200 idle sessions hold \(held) descriptors")
        #expect(held <= 2 * 200 + 8, "\(held) descriptors for 200 sessions")
        // Their transcripts are on disk already, the USER in them, while the sessions are open (the writer writes
        // at least once a second; on a loaded machine the gateway may take a few).
        func transcripts() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".txt") }
        }
        var texts = try transcripts()
        for _ in 0..<100 where texts.count < 200 {
            try await Task.sleep(for: .milliseconds(100))
            texts = try transcripts()
        }
        #expect(texts.count == 200)
        let one = try String(contentsOfFile: directory + "/" + texts[0], encoding: .utf8)
        #expect(one.contains("USER alice") && !one.contains("end of session"), "\(one)")
        for client in clients { client.close() }
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        try await upstream.stop()
    }
}
