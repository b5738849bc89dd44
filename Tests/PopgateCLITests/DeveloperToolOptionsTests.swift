import Foundation
import PopgateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The benches and scripts/fuzz.sh as a developer calls them: `--help` explains, a wrong call is refused before
/// anything is built, started or measured.
@Suite("developer tools' options", .timeLimit(.minutes(2)))
struct DeveloperToolOptionsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Runs `path` with `arguments`; its exit status and what it printed.
    static func run(_ path: String, _ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let log = ServeProcessTests.temporary("tool-out")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(path, arguments, output: log)
        let status = await process.wait(seconds: 30)
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    static func bench(_ name: String) throws -> String {
        let binary = try #require(popgateBinary(), "build the products first (swift build)")
        let path = binary.deletingLastPathComponent().appendingPathComponent(name).path
        try #require(FileManager.default.isExecutableFile(atPath: path), "\(path) not built")
        return path
    }

    @Test(
        "each bench: --help gives examples and runs nothing; an unknown option or a bad value exits 64",
        arguments: [
            ("popgate-relay-bench", ["--rounds", "x"]),
            ("popgate-machine-bench", ["--seconds"]),
            ("popgate-inspect-bench", ["--megabytes", "many"]),
        ]
    )
    func benchOptions(name: String, badValue: [String]) async throws {
        let path = try Self.bench(name)
        let help = try await Self.run(path, ["--help"])
        #expect(help.status == 0, "\(help.output)")
        #expect(help.output.contains("USAGE: \(name)"), "\(help.output)")
        #expect(help.output.contains("Example"), "\(help.output)")
        // Had it run the bench, the figures' header would follow.
        #expect(!help.output.contains("sessions/s") && !help.output.contains("MB/s"), "\(help.output)")
        for arguments in [["--bogus"], badValue] {
            let refused = try await Self.run(path, arguments)
            #expect(refused.status == 64, "\(arguments): \(refused.output)")
            #expect(refused.output.contains("Error:"), "\(arguments): \(refused.output)")
        }
    }

    @Test("the relay bench interrupted (SIGINT): it stops every relay it started and exits 130")
    func relayBenchInterrupted() async throws {
        let path = try Self.bench("popgate-relay-bench")
        let log = ServeProcessTests.temporary("bench-int")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let bench = try ChildProcess(
            path,
            [
                "--only", "popgate serve,NIO glue", "--rounds", "1", "--seconds", "30", "--retr-clients", "0", "--idle",
                "0",
            ],
            output: log
        )
        var children: [pid_t] = []
        for _ in 0..<200 where children.count < 2 {
            try await Task.sleep(for: .milliseconds(100))
            children = childProcesses(of: bench.pid)
        }
        try #require(
            children.count >= 2,
            "the bench started no relays: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")"
        )
        bench.signal(SIGINT)
        #expect(await bench.wait(seconds: 15) == 130)
        // Before, they went on running once the bench had gone (the NIO glue, which ignores SIGTERM, above all).
        #expect(children.filter(processRunning).isEmpty, "still running: \(children.filter(processRunning))")
        for pid in children where processRunning(pid) { kill(pid, SIGKILL) }
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(output.contains("interrupted: "), "\(output)")
    }

    @Test("fuzz.sh: --help, then every wrong call refused with exit 2 and a reason, before any build")
    func fuzzScriptOptions() async throws {
        let script = Self.root.appendingPathComponent("scripts/fuzz.sh").path
        let help = try await Self.run("/bin/bash", [script, "--help"])
        #expect(help.status == 0, "\(help.output)")
        #expect(help.output.contains("Usage: scripts/fuzz.sh"), "\(help.output)")
        let wrong: [([String], String)] = [
            (["--runs"], "--runs needs a number"),
            (["--jobs"], "--jobs needs a number"),
            (["--jobs", "0"], "'0' is not a positive whole number"),
            (["--runs", "1e6"], "'1e6' is not a positive whole number"),
            (["ten"], "'ten' is not a positive whole number"),
            (["--bogus"], "no option --bogus"),
            (["fuzz-nothing"], "no target fuzz-nothing"),
        ]
        for (arguments, reason) in wrong {
            let refused = try await Self.run("/bin/bash", [script] + arguments)
            #expect(refused.status == 2, "\(arguments): \(refused.output)")
            #expect(refused.output.contains(reason), "\(arguments): \(refused.output)")
            #expect(!refused.output.contains("Building"), "\(arguments): \(refused.output)")
        }
    }

    @Test("fuzz.sh's ledger: each target's code has a version; --ledger sums the runs of each version as it is now")
    func fuzzLedger() async throws {
        let script = Self.root.appendingPathComponent("scripts/fuzz.sh").path
        var versions: [String: String] = [:]
        for target in ["fuzz-rules", "fuzz-relay"] {
            let code = try await Self.run("/bin/bash", [script, "--code", target])
            #expect(code.status == 0, "\(code.output)")
            let version = code.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(version == "uncommitted" || (version.count == 12 && version.allSatisfy(\.isHexDigit)), "\(version)")
            versions[target] = version
        }
        let refused = try await Self.run("/bin/bash", [script, "--code", "fuzz-nothing"])
        #expect(refused.status == 2, "\(refused.output)")
        let rules = try #require(versions["fuzz-rules"])
        let relay = try #require(versions["fuzz-relay"])
        guard rules != "uncommitted", relay != "uncommitted" else { return }
        // Two different parts of the code: each has its own version.
        #expect(rules != relay)
        let ledger = ServeProcessTests.temporary("ledger")
        defer { try? FileManager.default.removeItem(atPath: ledger) }
        let rows = [
            "# a comment",
            "2026-01-01\tfuzz-rules\t6000000\t0\t\(rules)\tfirst",
            "2026-01-02\tfuzz-rules\t4000000\t0\t\(rules)\tsecond",
            "2026-01-01\tfuzz-rules\t9\t0\t000000000000\tan earlier version",
            "2026-01-03\tfuzz-relay\t0\t1\t\(relay)\ta finding",
            "2026-01-03\tfuzz-relay\t5\t0\t\(relay)\tsmall",
        ]
        try (rows.joined(separator: "\n") + "\n").write(toFile: ledger, atomically: true, encoding: .utf8)
        let report = try await Self.run("/usr/bin/env", ["FUZZ_LEDGER=\(ledger)", "/bin/bash", script, "--ledger"])
        #expect(report.status == 0, "\(report.output)")
        let lines = report.output.split(separator: "\n")
        let rulesLine = try #require(lines.first { $0.hasPrefix("fuzz-rules:") }, "\(report.output)")
        #expect(rulesLine.contains("10000000 inputs on the code as it is now (\(rules)), 0 crash(es): met"))
        #expect(rulesLine.contains("runs from 2026-01-01 to 2026-01-02"))
        #expect(rulesLine.contains("9 more on earlier versions"))
        let relayLine = try #require(lines.first { $0.hasPrefix("fuzz-relay:") }, "\(report.output)")
        #expect(relayLine.contains("5 inputs on the code as it is now (\(relay)), 1 crash(es): a crash to fix"))
        let packets = try #require(lines.first { $0.hasPrefix("fuzz-packets:") }, "\(report.output)")
        #expect(packets.contains("0 inputs") && packets.contains("short of 10,000,000"))
        #expect(lines.count == 6)
    }

    @Test(
        "the NIO glue's lines mode passes on whole lines only, a line split between reads as one, both ways; an unknown mode exits 2"
    )
    func glueLinesFramed() async throws {
        let glue = try Self.bench("nio-glue-relay")
        let refused = try await Self.run(glue, ["1", "2", "bogus"])
        #expect(refused.status == 2 && refused.output.contains("unknown mode bogus"), "\(refused.output)")

        // The upstream is a socket of the test's, so that each read's edges can be seen.
        let listener = try LoopbackListener()
        let port = try Dovecot.freePort()
        let process = try ChildProcess(glue, ["\(port)", "\(listener.port)", "lines"])
        // Connecting is the wait for it to listen (a probe would make an upstream connection of its own).
        var connected: RawSocket?
        for _ in 0..<100 where connected == nil {
            connected = try? RawSocket(port: port)
            if connected == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let client = try #require(connected, "the glue does not listen")
        let upstream = try #require(listener.accept(seconds: 5), "the glue did not connect upstream")
        defer {
            Glibc.close(upstream)
            client.close()
        }
        client.send("US")
        try await Task.sleep(for: .milliseconds(300))
        client.send("ER alice\r\nPA")
        try await Task.sleep(for: .milliseconds(300))
        client.send("SS x\r\n")
        // Without the mode, "US" arrives alone; with it, only whole lines, the split one joined.
        var received = ""
        while received.count < "USER alice\r\nPASS x\r\n".count, let read = Self.receive(upstream, seconds: 2) {
            #expect(read.utf8.last == UInt8(ascii: "\n"), "a read ending mid-line: \(read.debugDescription)")
            received += read
        }
        #expect(received == "USER alice\r\nPASS x\r\n")

        Self.send(upstream, "+OK al")
        try await Task.sleep(for: .milliseconds(300))
        Self.send(upstream, "ice\r\n+OK in\r\n")
        let first = Self.receive(client.fd, seconds: 2)
        #expect(first == "+OK alice\r\n+OK in\r\n", "\(first.debugDescription)")
        await process.stop()
    }

    static func send(_ fd: Int32, _ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
    }

    /// One read's octets, or nil when none come within `seconds`.
    static func receive(_ fd: Int32, seconds: Int) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return nil }
        var octets = [UInt8](repeating: 0, count: 4096)
        let count = octets.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? String(decoding: octets.prefix(count), as: UTF8.self) : nil
    }
}

/// A listening loopback socket whose connections the test reads itself.
final class LoopbackListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        self.port = Int(UInt16(bigEndian: address.sin_port))
        guard fd >= 0, listening else { throw ChildProcess.Failure(description: "cannot listen on loopback") }
    }

    /// The next connection, or nil when none comes within `seconds`.
    func accept(seconds: Int) -> Int32? {
        var poller = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(seconds * 1000)) == 1 else { return nil }
        let connection = Glibc.accept(self.fd, nil, nil)
        return connection >= 0 ? connection : nil
    }

    deinit { Glibc.close(self.fd) }
}
