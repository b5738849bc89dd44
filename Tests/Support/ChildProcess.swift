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
        self.pid = try spawn(path, arguments) { actions in
            posix_spawn_file_actions_addopen(&actions, 1, output ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
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

/// glibc 2.34's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not export.
private let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(
        symbol,
        to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self
    )
}()

/// Starts `program` (a path, or a name looked up on PATH) with an empty signal mask and stdin from /dev/null;
/// `configure` adds what the child's other descriptors are. Threads of the test runner block signals, and a child
/// would inherit that mask and never see the SIGTERM that stops it.
func spawn(
    _ program: String,
    _ arguments: [String],
    configure: (inout posix_spawn_file_actions_t) -> Void
) throws -> pid_t {
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
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    configure(&actions)
    // Nothing else of this process goes with the child: NIO's sockets are not close-on-exec, and a child that
    // held a copy of a test's client socket kept it open after the test closed it, so the gateway never heard
    // the client leave (the parallel suite's vanished-client failures).
    guard let closeFrom = addCloseFrom else {
        throw ChildProcess.Failure(description: "this C library has no posix_spawn_file_actions_addclosefrom_np")
    }
    _ = closeFrom(&actions, 3)

    let argv: [UnsafeMutablePointer<CChar>?] = ([program] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let result = posix_spawnp(&pid, program, &actions, &attributes, argv, environ)
    guard result == 0 else {
        throw ChildProcess.Failure(
            description:
                "cannot start \(program): \(String(cString: strerror(result))). The README's test command installs it."
        )
    }
    return pid
}

/// Runs a program to its end and returns its exit status and standard output (standard error: `errors`, a
/// path, or nowhere). Blocks: call it off the cooperative pool.
///
/// Not Foundation's Process: its Pipe and FileHandle close descriptors a second time under concurrency
/// (swiftlang/swift#57827), and in a test process a second close shuts whatever socket got that number since
/// (a gateway's or a server's connection, which then never hears from its peer). Here the channel is this
/// function's (a socket pair), made close-on-exec, each end closed once.
public func runProgram(
    _ program: String,
    _ arguments: [String],
    errors: String? = nil
) throws -> (
    status: Int32, output: [UInt8]
) {
    // A socket pair rather than a pipe: Glibc's module has no pipe2, and a pipe made then marked close-on-exec
    // could reach a child another thread spawns in between (which would hold the write end open).
    var ends: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
        throw ChildProcess.Failure(description: "socketpair: \(String(cString: strerror(errno)))")
    }
    let pid: pid_t
    do {
        pid = try spawn(program, arguments) { actions in
            posix_spawn_file_actions_adddup2(&actions, ends[1], 1)
            posix_spawn_file_actions_addopen(&actions, 2, errors ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
    } catch {
        close(ends[0])
        close(ends[1])
        throw error
    }
    close(ends[1])
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(ends[0], $0.baseAddress, $0.count) }
        if n < 0, errno == EINTR { continue }
        if n <= 0 { break }
        output += buffer[0..<n]
    }
    close(ends[0])
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let low = status & 0x7F
    return (low == 0 ? (status >> 8) & 0xFF : 128 + low, output)
}

/// Runs a program off the cooperative pool and returns its output; fails on a non-zero exit.
public func runTool(_ program: String, _ arguments: [String]) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(
                with: Result {
                    let (status, output) = try runProgram(program, arguments)
                    guard status == 0 else {
                        throw ChildProcess.Failure(description: "\(program) exited \(status)")
                    }
                    return String(decoding: output, as: UTF8.self)
                }
            )
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

/// The processes whose parent is `pid`, from /proc.
public func childProcesses(of pid: pid_t) -> [pid_t] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { procStat($0)?.dropFirst().first.flatMap { Int32($0) } == pid }
}

/// Whether `pid` runs: in /proc and not a zombie (a child whose parent has gone may stay one a while).
public func processRunning(_ pid: pid_t) -> Bool {
    guard let state = procStat(pid)?.first else { return false }
    return state != "Z"
}

/// The fields of /proc/PID/stat after the command's name: state, parent, …
private func procStat(_ pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ")
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
