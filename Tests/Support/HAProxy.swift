import Foundation

/// Debian's HAProxy in TCP mode, started by a test on free loopback ports, each listener relaying to a target
/// with `send-proxy` (v1) or `send-proxy-v2`. Stopped by its pid.
public final class HAProxy: @unchecked Sendable {
    public enum Header: String, Sendable {
        case v1 = "send-proxy"
        case v2 = "send-proxy-v2"
    }

    /// The port clients connect to, for each listener asked for, in order.
    public let ports: [Int]
    private let process: ChildProcess
    private let directory: String

    /// `listeners`: where each relays to, and which header it sends.
    public init(_ listeners: [(target: Int, header: Header)]) throws {
        let binary = "/usr/sbin/haproxy"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw Dovecot.Failure(description: "haproxy is not installed; scripts/test.sh installs it")
        }
        self.directory =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("popgate-haproxy-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
        // A free port can be taken by another test before haproxy binds it; haproxy then exits (while whoever
        // took the port answers the readiness probe), so a start counts once haproxy is still running after it.
        var started: (ChildProcess, [Int])?
        var lastLog = ""
        for _ in 0..<4 where started == nil {
            let ports = try listeners.map { _ in try Dovecot.freePort() }
            let process = try Self.start(binary, listeners, ports: ports, directory: self.directory)
            var bound = true
            for port in ports where (try? Dovecot.waitForPort(port)) == nil { bound = false }
            Thread.sleep(forTimeInterval: 0.2)
            if bound, process.isRunning {
                started = (process, ports)
            } else {
                lastLog = (try? String(contentsOfFile: self.directory + "/haproxy.log", encoding: .utf8)) ?? ""
                process.signal(SIGKILL)
                _ = process.isRunning
            }
        }
        guard let (process, ports) = started else {
            throw Dovecot.Failure(description: "haproxy did not start; its log:\n\(lastLog)")
        }
        self.ports = ports
        self.process = process
    }

    private static func start(
        _ binary: String,
        _ listeners: [(target: Int, header: Header)],
        ports: [Int],
        directory: String
    ) throws -> ChildProcess {
        var config = """
            global
              maxconn 512
            defaults
              mode tcp
              timeout connect 5s
              timeout client 30s
              timeout server 30s

            """
        for (index, listener) in listeners.enumerated() {
            config += """
                listen l\(index)
                  bind 127.0.0.1:\(ports[index])
                  server gateway 127.0.0.1:\(listener.target) \(listener.header.rawValue)

                """
        }
        try config.write(toFile: directory + "/haproxy.cfg", atomically: true, encoding: .utf8)
        return try ChildProcess(binary, ["-f", directory + "/haproxy.cfg", "-db"], output: directory + "/haproxy.log")
    }

    public var log: String { (try? String(contentsOfFile: self.directory + "/haproxy.log", encoding: .utf8)) ?? "" }

    public func stop() async {
        await self.process.stop()
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
