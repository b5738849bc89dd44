import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A program the tests start and stop by its pid.
///
/// Started with posix_spawn and an empty signal mask: threads of the test runner block signals, and a
/// child would inherit that mask and never see the SIGTERM that stops it.
public final class ChildProcess: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public let pid: pid_t
    private var status: Int32?

    /// Starts `path` with `arguments`; standard output and error go to `output` (a file path) or nowhere.
    public init(_ path: String, _ arguments: [String], output: String? = nil) throws {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let target = output ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, target, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw Failure(description: "cannot start \(path): \(String(cString: strerror(result)))")
        }
        self.pid = pid
    }

    /// Whether the program still runs (it is reaped when it has ended).
    public var isRunning: Bool {
        if self.status != nil { return false }
        var status: Int32 = 0
        if waitpid(self.pid, &status, WNOHANG) == self.pid {
            self.status = status
            return false
        }
        return true
    }

    public func signal(_ signal: Int32) {
        if self.isRunning { kill(self.pid, signal) }
    }

    /// Waits off the cooperative pool for the program to end; returns its exit status (or 128 + signal).
    public func wait(seconds: Double = 10) async -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while self.isRunning {
            if Date() > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        guard let status = self.status else { return nil }
        let low = status & 0x7F
        return low == 0 ? (status >> 8) & 0xFF : 128 + low
    }

    deinit {
        // A test that threw before stopping its child must not leave it running.
        if self.isRunning {
            kill(self.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(self.pid, &status, 0)
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within `seconds`.
    public func stop(seconds: Double = 10) async {
        self.signal(SIGTERM)
        if await self.wait(seconds: seconds) == nil {
            self.signal(SIGKILL)
            _ = await self.wait(seconds: 5)
        }
    }
}

/// Runs a program off the cooperative pool and returns its output; fails on a non-zero exit.
public func runTool(_ program: String, _ arguments: [String]) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [program] + arguments
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            do {
                try process.run()
                let data = out.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                if process.terminationStatus != 0 {
                    continuation.resume(
                        throwing: ChildProcess.Failure(description: "\(program) exited \(process.terminationStatus)")
                    )
                } else {
                    continuation.resume(returning: String(decoding: data, as: UTF8.self))
                }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}

/// The built `popgate` executable, next to the test bundle.
public func popgateBinary() -> URL? {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("popgate")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let fallback = root.appendingPathComponent(".build/debug/popgate")
    return FileManager.default.isExecutableFile(atPath: fallback.path) ? fallback : nil
}

/// The resident set size of a process, in bytes, from /proc.
public func residentBytes(of pid: pid_t) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        return digits.map { $0 * 1024 }
    }
    return nil
}
