// Sessions per second and RETR throughput through popgate serve, directly, and through the anchors that are
// installed (haproxy's TCP relay, nginx's mail proxy), side by side in one run, as ratios.
// Run: scripts/bench.sh, or swift run -c release popgate-relay-bench --help for its options and examples.

import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import POP3Bench
import POP3NIO
import POP3Server

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "popgate-relay-bench",
        abstract: "popgate serve beside direct, the bare NIO relay, haproxy and nginx's mail proxy, as ratios.",
        discussion: """
            Examples, each target's figures beside the others':
              popgate-relay-bench
              popgate-relay-bench --proxy --rules --transcripts
              popgate-relay-bench --before /tmp/old/popgate
            CPU per session against the bare NIO relay, the median of 9 rounds:
              popgate-relay-bench --only "popgate serve,NIO glue" --rounds 9 \\
                --seconds 3 --retr-clients 0 --idle 0
            """
    )
    @Option(help: "Seconds per figure.") var seconds = 5
    @Option(help: "Concurrent clients for the sessions figure.") var clients = 32
    @Option(name: .customLong("retr-clients"), help: "Concurrent clients for RETR (0: no RETR figure).")
    var retrClients = 4
    @Option(name: .customLong("message-mib"), help: "Size of the RETR message in MiB.") var messageMiB = 10
    @Option(help: "Rounds; with more than two, odd rounds run the targets backwards and ratios are medians.")
    var rounds = 2
    @Option(help: "Logged-in sessions held idle for the memory figure (0: none).") var idle = 1000
    /// `--idle-workers K --idle-held N`: N more idle sessions held through K popgate processes sharing one port
    /// (`--reuse-port`), their clients in processes of their own (`popgate bench --workload idle`, 5,000 each).
    /// One process's descriptor limit (20,000 here, hard) cannot hold 10,000 sessions' 20,000 sockets; K can.
    @Option(name: .customLong("idle-workers"), help: "popgate processes sharing one port for --idle-held.")
    var idleWorkers = 0
    @Option(name: .customLong("idle-held"), help: "Idle sessions held through --idle-workers processes.")
    var idleHeld = 10_000
    @Option(
        help: ArgumentHelp(
            "Another popgate binary as one more target (before and after in one run).",
            valueName: "path"
        )
    )
    var before: String?
    @Flag(
        help: """
            Every relay terminates TLS for its clients, each client a full handshake per session; openssl s_time \
            measures resumption, and --idle sessions are held over TLS (memory per idle TLS session).
            """
    )
    var tls = false
    @Flag(help: "Each popgate also runs writing transcripts (text and JSON lines).") var transcripts = false
    /// A tmpfs such as /dev/shm separates popgate's cost from the file system's cost of making files.
    @Option(
        name: .customLong("transcripts-in"),
        help: ArgumentHelp(
            "Where --transcripts go (implies it; the run's temporary directory by default).",
            valueName: "dir"
        )
    )
    var transcriptsIn: String?
    /// A 10,000-prefix allow list (this machine's 127.0.0.0/8 among them), every kind of limit on with numbers no
    /// run reaches, a command and a user denied.
    @Flag(help: "Each popgate also runs with a rules file.") var rules = false
    @Flag(help: "Each popgate also runs behind the PROXY protocol, its clients sending a v1 header first.")
    var proxy = false
    @Flag(help: "popgate also with --http and no viewer, and with a viewer reading every session's live stream.")
    var page = false
    @Option(
        help: ArgumentHelp(
            "Only the targets whose names start with one of these (direct always runs).",
            valueName: "a,b"
        )
    )
    var only: String?

    mutating func validate() throws {
        for (name, value) in [("--seconds", seconds), ("--rounds", rounds), ("--message-mib", messageMiB)]
        where value < 1 {
            throw ValidationError("\(name) must be at least 1")
        }
        for (name, value) in [
            ("--clients", clients), ("--retr-clients", retrClients), ("--idle", idle),
            ("--idle-workers", idleWorkers), ("--idle-held", idleHeld),
        ] where value < 0 {
            throw ValidationError("\(name) must not be negative")
        }
        if clients == 0 { throw ValidationError("--clients must be at least 1") }
    }
}
let options = Options.parseOrExit()
let seconds = options.seconds
let sessionClients = options.clients
let retrClients = options.retrClients
let messageMiB = options.messageMiB
let rounds = options.rounds
let idleSessions = options.idle
let idleWorkers = options.idleWorkers
let idleHeld = options.idleHeld
let idleClientProcesses = idleWorkers > 0 ? (idleHeld + 4_999) / 5_000 : 0
let before = options.before
let tlsMode = options.tls
let withTranscripts = options.transcripts || options.transcriptsIn != nil
let transcriptsIn = options.transcriptsIn
let withRules = options.rules
let withProxy = options.proxy
let withPage = options.page
/// The viewers of `--page`, stopped at the end.
var viewers: [Child] = []
let only = options.only.map { $0.split(separator: ",").map(String.init) }
let user = "bench"
// Idle sessions hold two descriptors each in a relay (inherited by the relays started below).
var descriptors = rlimit()
if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &descriptors) == 0 {
    descriptors.rlim_cur = descriptors.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &descriptors)
}
let password = "bench-password"

// MARK: - Processes

/// The children running now, by pid: an interrupted run (Ctrl-C, SIGTERM) stops them rather than leave them
/// running (they outlived the bench before, the NIO glue and nginx most of all).
let runningChildren = NIOLockedValueBox<Set<pid_t>>([])

/// On SIGINT or SIGTERM: every child gets SIGTERM, and SIGKILL if it is still there after 3 s (the NIO glue
/// inherits a blocked SIGTERM); the run's directory goes, and the bench exits with 128 + the signal.
func stopChildrenOnSignals(removing directory: URL) -> [any DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler {
            let children = runningChildren.withLockedValue { $0 }
            for pid in children { kill(pid, SIGTERM) }
            // Foundation reaps each child once it exits; until then it is there to signal.
            let deadline = Date().addingTimeInterval(3)
            while Date() < deadline, children.contains(where: { kill($0, 0) == 0 }) { usleep(20_000) }
            for pid in children where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(at: directory)
            print("\ninterrupted: \(children.count) child process\(children.count == 1 ? "" : "es") stopped")
            exit(128 + number)
        }
        source.resume()
        return source
    }
}

/// A program the benchmark starts and stops by its pid.
final class Child {
    let process = Process()
    let name: String

    init(_ name: String, _ path: String, _ arguments: [String], log: String) throws {
        self.name = name
        self.process.executableURL = URL(fileURLWithPath: path)
        self.process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let output = FileHandle(forWritingAtPath: log)
        self.process.standardOutput = output
        self.process.standardError = output
        try self.process.run()
        let pid = self.process.processIdentifier
        runningChildren.withLockedValue { _ = $0.insert(pid) }
    }

    func stop() {
        let pid = self.process.processIdentifier
        defer { runningChildren.withLockedValue { _ = $0.remove(pid) } }
        guard self.process.isRunning else { return }
        kill(self.process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while self.process.isRunning && Date() < deadline { usleep(20_000) }
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
    }
}

/// POPGATE_BENCH_WRAP="/usr/bin/heaptrack -o /tmp/popgate": each popgate (and the NIO glue with popgate's reads)
/// runs under that command, for a profile of where its memory goes (its figures in this run are then the
/// wrapper's, not to be compared; a wrapper that does not exec its program leaves it running when stopped).
func wrapped(_ name: String, _ path: String, _ arguments: [String], log: String) throws -> Child {
    let wrap = ProcessInfo.processInfo.environment["POPGATE_BENCH_WRAP"].map {
        $0.split(separator: " ").map(String.init)
    }
    guard let wrap, let wrapper = wrap.first else { return try Child(name, path, arguments, log: log) }
    return try Child(name, wrapper, wrap.dropFirst() + [path] + arguments, log: log)
}

func which(_ program: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") + ["/usr/sbin"] {
        let path = "\(directory)/\(program)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

func freePort() throws -> Int {
    let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0)
        .wait()
    defer { try? channel.close().wait() }
    return channel.localAddress?.port ?? 0
}

func waitForPort(_ port: Int) -> Bool {
    for _ in 0..<250 {
        if let channel = try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port).wait()
        {
            try? channel.close().wait()
            return true
        }
        usleep(20_000)
    }
    return false
}

// MARK: - Workloads

/// What a balancer does first: a PROXY v1 header naming the client (here, itself), then the bytes.
final class ProxyHeaderWriter: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = ByteBuffer
    func channelActive(context: ChannelHandlerContext) {
        let local = context.channel.localAddress?.port ?? 0
        let remote = context.channel.remoteAddress?.port ?? 0
        let header = "PROXY TCP4 127.0.0.1 127.0.0.1 \(local) \(remote)\r\n"
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: header)), promise: nil)
        context.fireChannelActive()
    }
}

/// `popgate bench` against `port` for the run's time, as the benchmark's user (bench0, bench1, …).
func benchOptions(_ workload: BenchRunner.Workload, port: Int, tls: Bool, clients: Int) -> BenchRunner.Options {
    var options = BenchRunner.Options(host: "127.0.0.1", port: port)
    options.workload = workload
    options.concurrency = clients
    options.duration = Double(seconds)
    options.user = "\(user){n}"
    options.password = password
    options.tls = tls ? .implicit : .none
    return options
}

/// Concurrent clients each run short sessions until time is up: `popgate bench`'s sessions workload (greeting,
/// USER, PASS, STAT, LIST, QUIT), each worker its own maildrop.
func sessionsPerSecond(port: Int, tls: Bool, proxy: Bool = false) async -> (rate: Double, failures: Int, count: Int) {
    var options = benchOptions(.sessions, port: port, tls: tls, clients: sessionClients)
    options.sessions = 1_000_000_000
    if proxy { options.prepare = { try $0.pipeline.syncOperations.addHandler(ProxyHeaderWriter()) } }
    guard let report = try? await BenchRunner.run(options) else { return (0, 1, 0) }
    return (report.sessionsPerSecond, report.failed, report.completed)
}

/// CPU seconds a process and its child processes (nginx's workers) have used, all and in the kernel, from
/// /proc: a figure the other processes on this shared machine do not change, unlike rates.
struct CPU {
    var total = 0.0
    var system = 0.0
    static func - (a: CPU, b: CPU) -> CPU { CPU(total: a.total - b.total, system: a.system - b.system) }
    static func + (a: CPU, b: CPU) -> CPU { CPU(total: a.total + b.total, system: a.system + b.system) }
}

/// The resident set of a process, in KiB.
func residentKiB(_ pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return nil }
    return Int(line.split(separator: " ").dropFirst().first ?? "")
}

/// A session logged in as bench`index` through `port` and left open; its descriptor, or nil when the login did not
/// end in +OK (a session still in AUTHORIZATION is not what the memory figure is of).
func loggedInSession(port: Int, index: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 4096)
    // As a client does: the greeting first, then the login (pipelined), then its two +OK lines.
    guard connected == 0, buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 else {
        close(fd)
        return nil
    }
    let login = Array("USER \(user)\(index)\r\nPASS \(password)\r\n".utf8)
    guard login.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == login.count else {
        close(fd)
        return nil
    }
    var replies: [UInt8] = []
    while replies.filter({ $0 == 0x0A }).count < 2 {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            close(fd)
            return nil
        }
        replies += buffer[0..<n]
    }
    let second = replies.split(separator: 0x0A).dropFirst().first ?? []
    guard second.starts(with: Array("+OK".utf8)) else {
        close(fd)
        return nil
    }
    return fd
}

func cpuSeconds(_ pid: Int32) -> CPU? {
    func read(_ entry: String) -> (parent: Int32, user: Double, system: Double)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let parent = Int32(fields[1]), let user = Double(fields[11]),
            let system = Double(fields[12])
        else { return nil }
        return (parent, user, system)
    }
    guard let own = read("\(pid)") else { return nil }
    var user = own.user
    var system = own.system
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
        if let child = read(entry), child.parent == pid {
            user += child.user
            system += child.system
        }
    }
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    return CPU(total: (user + system) / tick, system: system / tick)
}

/// A few clients each retrieve the large message over and over on one session until time is up: `popgate
/// bench`'s retr workload.
func retrThroughput(port: Int, tls: Bool, proxy: Bool = false) async -> (rate: Double, failures: Int, octets: Int) {
    var options = benchOptions(.retr, port: port, tls: tls, clients: retrClients)
    options.retr = 1
    if proxy { options.prepare = { try $0.pipeline.syncOperations.addHandler(ProxyHeaderWriter()) } }
    guard retrClients > 0, let report = try? await BenchRunner.run(options) else { return (0, 0, 0) }
    return (Double(report.octets) / report.seconds, report.failed, report.octets)
}

// MARK: - Run

var big = Array("From: bench@example.org\r\nSubject: large\r\n\r\n".utf8)
let line = Array((String(repeating: "y", count: 76) + "\r\n").utf8)
while big.count < messageMiB * 1024 * 1024 { big += line }

var serverConfiguration = EmbeddedPOP3Server.Configuration()
// One maildrop per client: a maildrop is locked by the session that opened it (RFC 1939 §4).
serverConfiguration.users = Dictionary(
    uniqueKeysWithValues: (0..<max(sessionClients, retrClients, idleSessions)).map { ("\(user)\($0)", password) }
)
for k in 0..<idleClientProcesses {
    for n in 0..<(idleHeld / idleClientProcesses) { serverConfiguration.users["w\(k)x\(n)"] = password }
}
serverConfiguration.messages = [StoredMessage(uniqueID: "big", bytes: big)]
let upstreamGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let upstream = try await EmbeddedPOP3Server.start(serverConfiguration, group: upstreamGroup)
let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-bench-\(getpid())")
try FileManager.default.createDirectory(at: temporary, withIntermediateDirectories: true)
let signalSources = stopChildrenOnSignals(removing: temporary)

struct Target {
    var name: String
    var port: Int
    var child: Child?
    /// Its clients speak TLS to it.
    var tls = tlsMode
    /// Its clients begin with a PROXY header, as a balancer's connections do.
    var proxy = false
    /// Only the sessions figure: an anchor for CPU per session, not for RETR or held sessions.
    var sessionsOnly = false
}
var targets = [Target(name: tlsMode ? "direct (plaintext)" : "direct", port: upstream.port, child: nil, tls: false)]

/// With --tls, the upstream's TLS end for the "both sides" target.
var upstreamTLSFront: Child?
// With --tls: a certificate for the run, and the same as one file for haproxy.
let certificate = temporary.appendingPathComponent("cert.pem").path
let privateKey = temporary.appendingPathComponent("key.pem").path
let combined = temporary.appendingPathComponent("combined.pem").path
if tlsMode {
    let make = Process()
    make.executableURL = URL(fileURLWithPath: "/bin/sh")
    make.arguments = [
        "-c",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout \(privateKey) -out \(certificate) -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null && cat \(certificate) \(privateKey) > \(combined)",
    ]
    try make.run()
    make.waitUntilExit()
}

let popgate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
    "popgate"
).path
/// `popgate serve` from `path`, relaying to the benchmark's upstream.
@MainActor func popgateTarget(
    _ name: String,
    _ path: String,
    log: String,
    transcripts: Bool = false,
    upstreamTLSPort: Int? = nil,
    rules: Bool = false,
    proxy: Bool = false,
    http: Bool = false,
    viewer: Bool = false
) throws -> Target {
    let port = try freePort()
    var arguments = [
        "serve", "--listen", "127.0.0.1:\(port)", "--upstream", "127.0.0.1:\(upstreamTLSPort ?? upstream.port)",
        "--log-level", "error",
    ]
    if rules { arguments += ["--rules", try benchRules()] }
    if proxy { arguments += ["--proxy-protocol", "--proxy-trusted", "127.0.0.1"] }
    let httpPort = http ? try freePort() : 0
    if http { arguments += ["--http", "127.0.0.1:\(httpPort)"] }
    if upstreamTLSPort != nil {
        arguments += [
            "--upstream-tls", "implicit", "--upstream-ca", certificate, "--upstream-server-name", "localhost",
        ]
    }
    if tlsMode {
        arguments[1] = "--listen-tls"
        arguments += ["--cert", certificate, "--key", privateKey]
    }
    if transcripts {
        let base = transcriptsIn.map { URL(fileURLWithPath: $0) } ?? temporary
        arguments += ["--transcripts", base.appendingPathComponent("popgate-bench-\(getpid())-\(log)").path]
    }
    let child = try wrapped(log, path, arguments, log: temporary.appendingPathComponent("\(log).log").path)
    if viewer, let curl = which("curl") {
        // A viewer that keeps reading: every session's list updates, as the page gets them.
        viewers.append(
            try Child(
                "\(log)-viewer",
                curl,
                [
                    "-sN", "--retry", "50", "--retry-connrefused", "--retry-delay", "0", "-o", "/dev/null",
                    "http://127.0.0.1:\(httpPort)/api/stream",
                ],
                log: temporary.appendingPathComponent("\(log)-viewer.log").path
            )
        )
    }
    return Target(name: name, port: port, child: child, proxy: proxy)
}
/// haproxy relaying TCP from `port` to the embedded server, with TLS on its listening side when `tls`.
func haproxy(_ haproxy: String, name: String, port: Int, tls: Bool) throws -> Child {
    let config = """
        global
          maxconn 4096
        defaults
          mode tcp
          timeout connect 5s
          timeout client 60s
          timeout server 60s
        listen pop3
          bind 127.0.0.1:\(port)\(tls ? " ssl crt \(combined)" : "")
          server upstream 127.0.0.1:\(upstream.port)
        """
    let path = temporary.appendingPathComponent("\(name).cfg").path
    try (config + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return try Child(name, haproxy, ["-f", path, "-db"], log: temporary.appendingPathComponent("\(name).log").path)
}

/// The rules file of `--rules`, with its prefix list beside it.
func benchRules() throws -> String {
    var generator = SystemRandomNumberGenerator()
    var prefixes = ["127.0.0.0/8"]
    for index in 0..<9_999 {
        if index % 2 == 0 {
            let address = UInt32.random(in: 0x0100_0000...0x7EFF_FFFF, using: &generator)
            let length = Int.random(in: 8...32, using: &generator)
            let masked = length == 32 ? address : address & ~(UInt32.max >> UInt32(length))
            prefixes.append("\(masked >> 24).\(masked >> 16 & 255).\(masked >> 8 & 255).\(masked & 255)/\(length)")
        } else {
            let groups = (0..<4).map { _ in String(UInt16.random(in: 0...UInt16.max, using: &generator), radix: 16) }
            prefixes.append("2001:\(groups.joined(separator: ":"))::/\(Int.random(in: 32...64, using: &generator))")
        }
    }
    let list = temporary.appendingPathComponent("bench-prefixes.txt").path
    try (prefixes.joined(separator: "\n") + "\n").write(toFile: list, atomically: true, encoding: .utf8)
    let rules = """
        allow from file \(list)
        deny from any
        limit connections 100000000 per minute per client-ip
        limit sessions 100000 concurrent per client-ip
        limit auth-failures 100000 per 10 minutes per client-ip then block 1 minute
        limit auth-failures 100000 per hour per user then block 1 minute
        deny command TOP for user nobody
        deny user nobody
        """
    let path = temporary.appendingPathComponent("bench.rules").path
    try (rules + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

if FileManager.default.isExecutableFile(atPath: popgate) {
    targets.append(try popgateTarget(tlsMode ? "popgate serve (TLS)" : "popgate serve", popgate, log: "popgate"))
    if withRules {
        targets.append(try popgateTarget("popgate +rules", popgate, log: "popgate-r", rules: true))
    }
    if withProxy {
        targets.append(try popgateTarget("popgate +PROXY header", popgate, log: "popgate-p", proxy: true))
    }
    if withTranscripts {
        targets.append(try popgateTarget("popgate +transcripts", popgate, log: "popgate-t", transcripts: true))
    }
    if withPage {
        targets.append(try popgateTarget("popgate +http, no viewer", popgate, log: "popgate-h", http: true))
        targets.append(
            try popgateTarget("popgate +http, a viewer", popgate, log: "popgate-hv", http: true, viewer: true)
        )
    }
    // TLS on both sides: the upstream's TLS end is a haproxy in front of the embedded server (which has none).
    if tlsMode, let path = which("haproxy") {
        let port = try freePort()
        upstreamTLSFront = try haproxy(path, name: "upstream-tls", port: port, tls: true)
        _ = waitForPort(port)
        targets.append(
            try popgateTarget("popgate serve (TLS both sides)", popgate, log: "popgate-tt", upstreamTLSPort: port)
        )
    }
} else {
    print("popgate not found next to the benchmark; build it with: swift build -c release")
}
if let before {
    targets.append(try popgateTarget("popgate before", before, log: "popgate-before"))
    if withTranscripts {
        targets.append(
            try popgateTarget("popgate before +transcripts", before, log: "popgate-before-t", transcripts: true)
        )
    }
}

// SwiftNIO's floor: the smallest NIO relay, parsing nothing, built with the benchmarks.
let glue = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
    "nio-glue-relay"
).path
/// The glue in one of its modes (nil: bytes as they come), on a port of its own.
@MainActor func glueTarget(_ name: String, mode: String?, log: String, sessionsOnly: Bool = false) throws -> Target {
    let port = try freePort()
    let arguments = ["\(port)", "\(upstream.port)"] + (mode.map { [$0] } ?? [])
    let path = temporary.appendingPathComponent("\(log).log").path
    // popgate's reads: wrapped like popgate (heaptrack), for the memory floor.
    let child =
        mode == "small-reads"
        ? try wrapped(log, glue, arguments, log: path) : try Child(log, glue, arguments, log: path)
    return Target(name: name, port: port, child: child, sessionsOnly: sessionsOnly)
}
if FileManager.default.isExecutableFile(atPath: glue), !tlsMode {
    targets.append(try glueTarget("NIO glue", mode: nil, log: "nio-glue"))
    // The floor of a relay that reads each line: every line end found, whole lines passed on, nothing parsed.
    // It finds every line end of a body too, which popgate's body scanner does not: no RETR floor.
    targets.append(try glueTarget("NIO glue, lines framed", mode: "lines", log: "nio-glue-lines", sessionsOnly: true))
    if idleSessions > 0 {
        // The same with popgate's reads (256 octets at first): the floor for memory per idle session.
        targets.append(try glueTarget("NIO glue, 256-octet reads", mode: "small-reads", log: "nio-glue-small"))
    }
}

if let path = which("haproxy") {
    let port = try freePort()
    targets.append(
        Target(
            name: tlsMode ? "haproxy (tcp, TLS)" : "haproxy (tcp)",
            port: port,
            child: try haproxy(path, name: "haproxy", port: port, tls: tlsMode)
        )
    )
}

// nginx's mail proxy: it reads the login itself, asks auth_http where to go (here its own http block
// answers), logs in upstream and relays the rest.
let nginxModule = "/usr/lib/nginx/modules/ngx_mail_module.so"
if let nginx = which("nginx"), FileManager.default.fileExists(atPath: nginxModule) {
    let port = try freePort()
    let authPort = try freePort()
    let prefix = temporary.appendingPathComponent("nginx").path
    try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
    let config = """
        load_module \(nginxModule);
        daemon off;
        worker_processes auto;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/error.log error;
        events { worker_connections 4096; }
        http {
          access_log off;
          client_body_temp_path \(prefix);
          proxy_temp_path \(prefix);
          fastcgi_temp_path \(prefix);
          uwsgi_temp_path \(prefix);
          scgi_temp_path \(prefix);
          server {
            listen 127.0.0.1:\(authPort);
            location /auth {
              add_header Auth-Status OK;
              add_header Auth-Server 127.0.0.1;
              add_header Auth-Port \(upstream.port);
              return 204;
            }
          }
        }
        mail {
          auth_http 127.0.0.1:\(authPort)/auth;
          server {
            listen 127.0.0.1:\(port)\(tlsMode ? " ssl" : "");
            \(tlsMode ? "ssl_certificate \(certificate); ssl_certificate_key \(privateKey);" : "")
            protocol pop3;
            proxy on;
            pop3_auth plain;
          }
        }
        """
    let path = prefix + "/nginx.conf"
    try (config + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    let log = temporary.appendingPathComponent("nginx.log").path
    targets.append(
        Target(
            name: tlsMode ? "nginx (mail, TLS)" : "nginx (mail)",
            port: port,
            child: try Child("nginx", nginx, ["-p", prefix, "-e", prefix + "/error.log", "-c", path], log: log)
        )
    )
} else {
    print("nginx with its mail module not installed: its column is left out (scripts/bench.sh installs them)")
}

print(
    "popgate-relay-bench: \(seconds) s per figure; \(sessionClients) clients for sessions, \(retrClients) for RETR of a \(messageMiB) MiB message"
)
print(
    "upstream: the embedded POP3 server; every target relays to it; all on this machine's \(ProcessInfo.processInfo.activeProcessorCount) cores"
)
print("")

// Two rounds, targets interleaved, the better figure kept: the machine is shared and noisy.
var results: [(String, Double, Int, Double, Int)] = []
/// CPU seconds each relaying process spent in the session workloads, and the sessions it served.
var sessionCPU: [String: (seconds: CPU, sessions: Int)] = [:]
/// The same for RETR: CPU seconds and octets relayed.
var retrCPU: [String: (seconds: CPU, octets: Int)] = [:]
let ready = targets.filter { target in
    if let only, !target.name.hasPrefix("direct"), !only.contains(where: { target.name.hasPrefix($0) }) { return false }
    if waitForPort(target.port) { return true }
    let log = try? String(
        contentsOfFile: temporary.appendingPathComponent("\(target.child?.name ?? "x").log").path,
        encoding: .utf8
    )
    print("\(target.name): nothing listens on \(target.port); skipped. \(log ?? "")")
    return false
}
/// Each round's session rate and CPU per session, per target: a variant's cost is also the median of its
/// per-round ratios to plain popgate, measured next to each other (the machine's load drifts between rounds).
var roundRates: [String: [Double]] = [:]
var roundCPU: [String: [Double]] = [:]
for round in 0..<rounds {
    // Odd rounds go backwards, so that no target is always measured just after another's load.
    let order = Array(ready.enumerated())
    for (index, target) in round % 2 == 0 ? order : order.reversed() {
        let pid = target.child?.process.processIdentifier
        let cpuBefore = pid.flatMap(cpuSeconds)
        let sessions = await sessionsPerSecond(port: target.port, tls: target.tls, proxy: target.proxy)
        roundRates[target.name, default: []].append(sessions.rate)
        if let pid, let before = cpuBefore, let after = cpuSeconds(pid) {
            let sofar = sessionCPU[target.name] ?? (CPU(), 0)
            sessionCPU[target.name] = (sofar.seconds + (after - before), sofar.sessions + sessions.count)
            roundCPU[target.name, default: []].append((after - before).total / Double(max(1, sessions.count)))
        }
        let retrBefore = pid.flatMap(cpuSeconds)
        let retr =
            retrClients > 0 && !target.sessionsOnly
            ? await retrThroughput(port: target.port, tls: target.tls, proxy: target.proxy)
            : (rate: 0, failures: 0, octets: 0)
        if let pid, let before = retrBefore, let after = cpuSeconds(pid) {
            let sofar = retrCPU[target.name] ?? (CPU(), 0)
            retrCPU[target.name] = (sofar.seconds + (after - before), sofar.octets + retr.octets)
        }
        if round == 0 {
            results.append((target.name, sessions.rate, sessions.failures, retr.rate, retr.failures))
        } else {
            results[index].1 = max(results[index].1, sessions.rate)
            results[index].2 += sessions.failures
            results[index].3 = max(results[index].3, retr.rate)
            results[index].4 += retr.failures
        }
    }
}
// Memory per idle logged-in session: the growth of each relay's resident set with that many sessions open.
var idleMemory: [(String, Double)] = []
/// Each relay's held sessions: how many were held, how many then completed, its descriptors and resident KiB.
var idleCompletion: [(String, Int, Int, Int, Int)] = []

/// STAT then QUIT on a held session: whether both were answered +OK.
func finish(_ fd: Int32) -> Bool {
    let commands = Array("STAT\r\nQUIT\r\n".utf8)
    guard commands.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == commands.count else { return false }
    var replies: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1024)
    while replies.filter({ $0 == 0x0A }).count < 2 {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { return false }
        replies += buffer[0..<n]
    }
    let lines = replies.split(separator: 0x0A)
    return lines.count >= 2 && lines.prefix(2).allSatisfy { $0.starts(with: Array("+OK".utf8)) }
}
if idleSessions > 0, !tlsMode {
    // (The idle clients send no PROXY header: that target is left out here.)
    for target in ready
    where (target.name.hasPrefix("popgate") || target.name.hasPrefix("NIO")) && !target.proxy && !target.sessionsOnly {
        guard let pid = target.child?.process.processIdentifier, let base = residentKiB(pid) else { continue }
        var held: [Int32] = []
        for index in 0..<idleSessions {
            if let fd = loggedInSession(port: target.port, index: index) { held.append(fd) } else { break }
        }
        if held.count < idleSessions {
            print("\(target.name): only \(held.count) of \(idleSessions) sessions logged in")
        }
        usleep(300_000)
        if let now = residentKiB(pid), !held.isEmpty {
            idleMemory.append((target.name, Double(now - base) * 1024 / Double(held.count)))
        }
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
        // Then each is completed: STAT and QUIT, both +OK, or it counts as lost.
        let completed = held.filter { finish($0) }.count
        idleCompletion.append((target.name, held.count, completed, descriptors, residentKiB(pid) ?? 0))
        for fd in held { close(fd) }
        usleep(300_000)
    }
}

/// The held sessions through several popgate processes on one port: held, completed, and the processes'
/// descriptors and resident growth while held.
/// Sessions held through relays by bench clients: held, completed, failed, the relays' descriptors and resident
/// growth (KiB) while held, and the errors by kind.
typealias Held = (held: Int, completed: Int, failed: Int, descriptors: Int, growthKiB: Int, errors: String)
var workersResult: Held?
if idleWorkers > 0, !tlsMode {
    let port = try freePort()
    var workers: [Child] = []
    for index in 0..<idleWorkers {
        workers.append(
            try Child(
                "popgate-worker-\(index)",
                popgate,
                [
                    "serve", "--listen", "127.0.0.1:\(port)", "--upstream", "127.0.0.1:\(upstream.port)",
                    "--reuse-port", "--log-level", "error",
                ],
                log: temporary.appendingPathComponent("worker-\(index).log").path
            )
        )
    }
    defer { for worker in workers { worker.stop() } }
    _ = waitForPort(port)
    usleep(300_000)
    let pids = workers.map(\.process.processIdentifier)
    let perProcess = idleHeld / idleClientProcesses
    let clients = (0..<idleClientProcesses).map { (perProcess, "w\($0)x{n}") }
    workersResult = try holdThroughBench(port: port, pids: pids, clients: clients, tls: "none")
}

/// Idle sessions held by `popgate bench --workload idle` client processes (`count` sessions each, users from
/// the pattern) through the relays `pids`: how many were held, completed and failed, the relays' descriptors
/// and resident growth while held, and the errors by kind.
func holdThroughBench(
    port: Int,
    pids: [Int32],
    clients specs: [(count: Int, users: String)],
    tls: String
) throws -> Held {
    func total(_ measure: (Int32) -> Int?) -> Int { pids.compactMap(measure).reduce(0, +) }
    func descriptorCount(_ pid: Int32) -> Int? {
        let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        return names?.count
    }
    let base = total(residentKiB)
    let hold = 20
    let wanted = specs.map(\.count).reduce(0, +)
    var clients: [(Process, Pipe, Int)] = []
    for spec in specs {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: popgate)
        process.arguments = [
            "bench", "127.0.0.1:\(port)", "--workload", "idle", "--concurrency", "\(spec.count)", "--hold", "\(hold)",
            "--user", spec.users, "--password", password, "--timeout", "60", "--duration", "600", "--json",
            "--tls", tls,
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        clients.append((process, pipe, spec.count))
    }
    // Held once the relays hold two sockets a session; measured then, while the clients hold them.
    var descriptors = 0
    let deadline = Date().addingTimeInterval(300)
    while Date() < deadline {
        descriptors = total(descriptorCount)
        if descriptors >= 2 * wanted { break }
        if clients.allSatisfy({ !$0.0.isRunning }) { break }
        usleep(250_000)
    }
    usleep(2_000_000)
    descriptors = total(descriptorCount)
    let growth = total(residentKiB) - base
    var completed = 0
    var failed = 0
    var errors: [String] = []
    for (process, pipe, count) in clients {
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let report = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        completed += report?["completed"] as? Int ?? 0
        failed += report?["failed"] as? Int ?? count
        if let kinds = report?["errors"] as? [String: Int] { errors += kinds.map { "\($0.value) \($0.key)" } }
    }
    return (wanted, completed, failed, descriptors, growth, errors.joined(separator: ", "))
}

// With --tls: idle sessions held over implicit TLS through each popgate (NIOSSL keeps buffers of its own).
var tlsIdle: [(name: String, result: Held)] = []
if idleSessions > 0, tlsMode {
    for target in ready where target.name.hasPrefix("popgate") && target.tls && !target.proxy {
        guard let pid = target.child?.process.processIdentifier else { continue }
        let result = try holdThroughBench(
            port: target.port,
            pids: [pid],
            clients: [(idleSessions, "\(user){n}")],
            tls: "implicit"
        )
        tlsIdle.append((target.name, result))
    }
}

// TLS resumption: full handshakes per second against resumed ones (openssl s_time -new, -reuse), and whether
// a saved session is taken back (s_client -sess_out, then -sess_in says "Reused").
var resumption: [(String, Double, Double, Bool)] = []
func shell(_ command: String) -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command + " 2>&1"]
    let pipe = Pipe()
    process.standardOutput = pipe
    guard (try? process.run()) != nil else { return "" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}
/// "N connections in T real seconds" from s_time, as connections per second.
func perSecond(_ output: String) -> Double {
    for line in output.split(separator: "\n") where line.contains("connections in") && line.contains("real seconds") {
        let words = line.split(separator: " ")
        if let n = Double(words[0]), let index = words.firstIndex(of: "in"), let t = Double(words[index + 1]), t > 0 {
            return n / t
        }
    }
    return 0
}
if tlsMode {
    for target in ready where target.tls {
        let connect = "-connect 127.0.0.1:\(target.port)"
        // TLS 1.2: s_time reads nothing, so under TLS 1.3 it never sees the ticket that comes after the
        // handshake; a POP3 client, which reads the greeting, does (the s_client check below is TLS 1.3).
        let full = perSecond(shell("timeout 20 openssl s_time \(connect) -new -time 3 -tls1_2"))
        let resumed = perSecond(shell("timeout 20 openssl s_time \(connect) -reuse -time 3 -tls1_2"))
        let session = temporary.appendingPathComponent("session-\(target.port).pem").path
        _ = shell("(sleep 1; echo QUIT) | timeout 10 openssl s_client \(connect) -sess_out \(session) -ign_eof")
        let reused = shell("(sleep 1; echo QUIT) | timeout 10 openssl s_client \(connect) -sess_in \(session) -ign_eof")
            .contains("Reused, TLSv1.3")
        resumption.append((target.name, full, resumed, reused))
    }
}

for viewer in viewers { viewer.stop() }
for target in targets { target.child?.stop() }
upstreamTLSFront?.stop()
try? await upstream.stop()
try? await upstreamGroup.shutdownGracefully()
if results.contains(where: { $0.2 + $0.4 > 0 }) {
    print("some sessions failed; logs kept in \(temporary.path)")
} else {
    try? FileManager.default.removeItem(at: temporary)
}
if let transcriptsIn {
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: transcriptsIn)) ?? []
    where entry.hasPrefix("popgate-bench-\(getpid())-") {
        try? FileManager.default.removeItem(atPath: transcriptsIn + "/" + entry)
    }
}

let direct = results.first { $0.0.hasPrefix("direct") }
let haproxyResult = results.first { $0.0.hasPrefix("haproxy") }
let nginxResult = results.first { $0.0.hasPrefix("nginx") }
func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
print(
    pad("target", 32) + pad("sessions/s", 12) + pad("× direct", 10) + pad("× haproxy", 11) + pad("× nginx", 9)
        + pad("RETR MB/s", 11) + pad("× direct", 10) + pad("× haproxy", 11) + pad("× nginx", 9) + "failures"
)
/// A ratio, or "-" when the anchor has no figure (no RETR with --retr-clients 0).
func ratio(_ figure: Double, _ anchor: Double?) -> String {
    guard let anchor, anchor > 0 else { return "-" }
    return String(format: "%.2f", figure / anchor)
}
for (name, sessions, sessionFailures, retr, retrFailures) in results {
    let sd = ratio(sessions, direct?.1)
    let sh = ratio(sessions, haproxyResult?.1)
    let sn = ratio(sessions, nginxResult?.1)
    // A sessions-only anchor has no RETR figure, not a zero one.
    let noRETR = targets.first { $0.name == name }?.sessionsOnly ?? false
    let rate = noRETR ? "-" : String(format: "%.0f", retr / 1e6)
    let rd = noRETR ? "-" : ratio(retr, direct?.3)
    let rh = noRETR ? "-" : ratio(retr, haproxyResult?.3)
    let rn = noRETR ? "-" : ratio(retr, nginxResult?.3)
    print(
        pad(name, 32) + pad(String(format: "%.0f", sessions), 12) + pad(sd, 10) + pad(sh, 11) + pad(sn, 9)
            + pad(rate, 11) + pad(rd, 10) + pad(rh, 11) + pad(rn, 9) + "\(sessionFailures + retrFailures)"
    )
}

print("")
print("CPU in the relaying process (user + system, both rounds; lower is better, and the machine's noise does")
print("not change it the way it changes rates):")
func cpuTable(_ title: String, _ figures: [String: (CPU, Int)], unit: Double, _ format: String) {
    let per = figures.mapValues {
        ($0.0.total * unit / Double(max(1, $0.1)), $0.0.system * unit / Double(max(1, $0.1)))
    }
    let anchor = per.first { $0.key.hasPrefix("haproxy") }?.value.0
    let floor = per["NIO glue"]?.0
    for (name, value) in per.sorted(by: { $0.key > $1.key }) where figures[name]!.1 > 0 {
        let ratio =
            (anchor.map { String(format: "  %.2f × haproxy's", value.0 / $0) } ?? "")
            + (floor.map { String(format: "  %.2f × NIO glue's", value.0 / $0) } ?? "")
        print(
            "  " + pad(title, 14) + pad(name, 32) + pad(String(format: format, value.0), 9)
                + pad("(kernel " + String(format: format, value.1) + ")", 17) + ratio
        )
    }
}
cpuTable("per session", sessionCPU.mapValues { ($0.seconds, $0.sessions) }, unit: 1e6, "%.0f µs")
/// What a variant of popgate costs against plain `popgate serve`, in the same run.
@MainActor func costLine(_ title: String, _ variant: String) {
    guard let plain = results.first(where: { $0.0 == "popgate serve" }),
        let other = results.first(where: { $0.0 == variant })
    else { return }
    let cpu = { (name: String) in sessionCPU[name].map { $0.seconds.total / Double(max(1, $0.sessions)) } }
    var cpuRatio = "-"
    if let with = cpu(variant), let without = cpu("popgate serve") { cpuRatio = String(format: "%.3f", with / without) }
    print(
        "  \(title) cost: sessions/s with ÷ without = \(String(format: "%.3f", other.1 / plain.1)); CPU per session with ÷ without = \(cpuRatio)"
    )
    if rounds > 2 {
        print(
            "    median of \(rounds) rounds: sessions/s \(medianRatio(roundRates, variant)); CPU per session \(medianRatio(roundCPU, variant))"
        )
    }
}
/// The median of `name`'s per-round figures over `base`'s, and each round's ratio.
func medianRatio(_ figures: [String: [Double]], _ name: String, to base: String = "popgate serve") -> String {
    guard let with = figures[name], let without = figures[base], with.count == without.count, !with.isEmpty
    else { return "-" }
    let ratios = zip(with, without).map { $0 / $1 }
    let sorted = ratios.sorted()
    let median = (sorted[(sorted.count - 1) / 2] + sorted[sorted.count / 2]) / 2
    return String(format: "%.3f", median) + " (each round: "
        + ratios.map { String(format: "%.2f", $0) }.joined(separator: " ") + ")"
}
if rounds > 2, roundCPU["NIO glue"] != nil {
    print(
        "  popgate serve ÷ NIO glue, CPU per session, median of \(rounds) rounds: \(medianRatio(roundCPU, "popgate serve", to: "NIO glue"))"
    )
}
if rounds > 2, roundCPU["NIO glue, lines framed"] != nil {
    print(
        "  popgate serve ÷ NIO glue, lines framed, CPU per session, median of \(rounds) rounds: \(medianRatio(roundCPU, "popgate serve", to: "NIO glue, lines framed"))"
    )
}
costLine("rules", "popgate +rules")
costLine("PROXY header", "popgate +PROXY header")
costLine("transcripts", "popgate +transcripts")
costLine("live page (no viewer)", "popgate +http, no viewer")
costLine("live page (a viewer)", "popgate +http, a viewer")
costLine("--before", "popgate before")
cpuTable("per GB RETR", retrCPU.mapValues { ($0.seconds, $0.octets) }, unit: 1e9, "%.2f s")

if !idleMemory.isEmpty {
    print("")
    print("Memory per idle logged-in session (\(idleSessions) sessions, growth of the resident set):")
    for (name, octets) in idleMemory {
        print("  " + pad(name, 32) + String(format: "%.1f KB", octets / 1000))
    }
}
if !idleCompletion.isEmpty {
    print(
        "Then each completed with STAT and QUIT (held, completed; the relay's descriptors and resident set while held):"
    )
    for (name, held, completed, descriptors, resident) in idleCompletion {
        print(
            "  " + pad(name, 32) + "\(held) held, \(completed) completed, \(held - completed) lost; "
                + "\(descriptors) descriptors, \(resident / 1024) MiB"
        )
    }
}

if let first = tlsIdle.first {
    print("")
    print(
        "Memory per idle logged-in session over TLS (\(first.result.held) sessions held by popgate bench, growth of the "
            + "resident set):"
    )
}
for (name, result) in tlsIdle {
    let errors = result.errors.isEmpty ? "" : " (\(result.errors))"
    print(
        "  " + pad(name, 32)
            + String(format: "%.1f KB", Double(result.growthKiB) * 1024 / 1000 / Double(max(result.held, 1)))
            + "; \(result.completed) completed, \(result.failed) failed\(errors); \(result.descriptors) descriptors while held"
    )
}

if let result = workersResult {
    print(
        "\(result.held) sessions held through \(idleWorkers) popgate processes on one port (--reuse-port), then each "
            + "completed with NOOP, STAT and QUIT:"
    )
    print(
        "  \(result.completed) completed, \(result.failed) failed\(result.errors.isEmpty ? "" : " (\(result.errors))"); "
            + "\(result.descriptors) descriptors in the popgates while held, resident +\(result.growthKiB / 1024) MiB "
            + String(
                format: "(%.1f KB a session)",
                Double(result.growthKiB) * 1024 / 1000 / Double(max(result.held, 1))
            )
    )
}

if !resumption.isEmpty {
    print("")
    print(
        "TLS 1.2 handshakes per second, one client (openssl s_time -new, -reuse), and whether a TLS 1.3 session is resumed:"
    )
    for (name, full, resumed, reused) in resumption {
        print(
            "  " + pad(name, 32)
                + String(format: "full %.0f/s   resumed %.0f/s   (%.1f×)   ", full, resumed, resumed / max(full, 1))
                + (reused ? "s_client: Reused" : "s_client: not reused")
        )
    }
}
