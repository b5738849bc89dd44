import Foundation
import PopgateTestSupport
import Testing

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
}
