import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A real Dovecot POP3 server (Debian's dovecot-pop3d) on a free loopback port, with a throw-away
/// configuration and maildir under a temporary directory. Stopped by its pid.
public final class Dovecot: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Mail files belong to this uid: Dovecot refuses root for mail access.
    public static let mailUID = 65534

    public let directory: URL
    public let port: Int
    public let users: [String: String]
    /// The master; a new one after ``restart()``.
    private var process: ChildProcess

    /// How Dovecot itself speaks TLS, with a certificate and key: STLS on its POP3 port, or implicit TLS (POP3S)
    /// on it instead.
    public enum TLS: Sendable {
        case stls(certificate: String, key: String)
        case implicit(certificate: String, key: String)
    }

    public init(
        users: [String: String] = ["alice": "wonderland"],
        messages: [[UInt8]] = [],
        tls: TLS? = nil,
        extraMechanisms: [String] = []
    ) throws {
        let binary = "/usr/sbin/dovecot"
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw Failure(description: "dovecot is not installed; scripts/test.sh installs dovecot-pop3d")
        }
        self.users = users
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-dovecot-\(UUID().uuidString.prefix(8))"
        )
        let d = self.directory.path
        for sub in ["run", "state", "home"] {
            try FileManager.default.createDirectory(atPath: "\(d)/\(sub)", withIntermediateDirectories: true)
        }
        let passwd = users.map { "\($0.key):{PLAIN}\($0.value)::::::" }.joined(separator: "\n") + "\n"
        try passwd.write(toFile: "\(d)/passwd", atomically: true, encoding: .utf8)
        let ssl: String
        let implicit: Bool
        switch tls {
        case nil:
            (ssl, implicit) = ("ssl = no", false)
        case .stls(let certificate, let key):
            (ssl, implicit) = ("ssl = yes\nssl_cert = <\(certificate)\nssl_key = <\(key)", false)
        case .implicit(let certificate, let key):
            (ssl, implicit) = ("ssl = yes\nssl_cert = <\(certificate)\nssl_key = <\(key)", true)
        }
        func config(port: Int) -> String {
            """
            protocols = pop3
            listen = 127.0.0.1
            base_dir = \(d)/run
            state_dir = \(d)/state
            log_path = \(d)/dovecot.log
            \(ssl)
            disable_plaintext_auth = no
            auth_mechanisms = plain login apop\(extraMechanisms.map { " " + $0 }.joined())
            # Failed logins are answered at once: tests make many, and the gateway's own limits are what they test.
            auth_failure_delay = 0
            mail_location = maildir:\(d)/mail/%u
            first_valid_uid = 1
            default_login_user = dovenull
            default_internal_user = dovecot
            default_internal_group = dovecot
            default_process_limit = 600
            default_client_limit = 4000
            pop3_uidl_format = %08Xu%08Xv
            protocol pop3 {
              mail_max_userip_connections = 1000
            }
            passdb {
              driver = passwd-file
              args = \(d)/passwd
            }
            userdb {
              driver = static
              args = uid=\(Self.mailUID) gid=\(Self.mailUID) home=\(d)/home/%u
            }
            service pop3-login {
              inet_listener pop3 {
                port = \(implicit ? 0 : port)
              }
              inet_listener pop3s {
                port = \(implicit ? port : 0)
                ssl = yes
              }
            }
            service imap-login {
              inet_listener imap {
                port = 0
              }
            }
            """
        }
        for user in users.keys {
            for sub in ["cur", "new", "tmp"] {
                try FileManager.default.createDirectory(
                    atPath: "\(d)/mail/\(user)/\(sub)",
                    withIntermediateDirectories: true
                )
            }
            for (index, message) in messages.enumerated() {
                try Data(message).write(
                    to: URL(fileURLWithPath: "\(d)/mail/\(user)/new/\(1_700_000_000 + index).\(index).popgate")
                )
            }
        }
        try Self.chown(d + "/mail")
        try Self.chown(d + "/home")

        // A free port can be taken between finding it and Dovecot binding it (by another test's server, or as
        // some connection's local port). Then Dovecot exits and whatever holds the port would answer the test:
        // only a Dovecot that is still running once its port answers counts; otherwise try another port.
        var attempt = 0
        while true {
            attempt += 1
            let port = try Self.freePort()
            try config(port: port).write(toFile: "\(d)/dovecot.conf", atomically: true, encoding: .utf8)
            let process = try ChildProcess(binary, ["-F", "-c", "\(d)/dovecot.conf"])
            do {
                try Self.waitForPort(port)
                // Whatever answers may be another process that took the port first: only Dovecot's own word
                // that it started (its master logs "starting up" once its listeners are bound) counts. On a
                // loaded machine that can take a while.
                var started = false
                for _ in 0..<200 where process.isRunning {
                    let log = (try? String(contentsOfFile: "\(d)/dovecot.log", encoding: .utf8)) ?? ""
                    if log.contains("Failed to start listeners") || log.contains("Fatal") { break }
                    if log.contains("starting up") {
                        started = true
                        break
                    }
                    Thread.sleep(forTimeInterval: 0.025)
                }
                if started, process.isRunning {
                    self.port = port
                    self.process = process
                    return
                }
            } catch {
                if attempt >= 5 { throw error }
            }
            process.signal(SIGKILL)
            _ = process.isRunning
            if attempt >= 5 { throw Failure(description: "Dovecot did not start on a free port in 5 attempts") }
            try? FileManager.default.removeItem(atPath: "\(d)/dovecot.log")
        }
    }

    /// Messages in a user's maildir (new and cur).
    public func messageCount(_ user: String = "alice") -> Int {
        let d = self.directory.path
        return ["new", "cur"].reduce(0) { count, sub in
            count + ((try? FileManager.default.contentsOfDirectory(atPath: "\(d)/mail/\(user)/\(sub)"))?.count ?? 0)
        }
    }

    public var pid: Int32 { self.process.pid }

    /// The end of Dovecot's log, to explain a failed test.
    public func logTail(_ octets: Int = 3000) -> String {
        let log = (try? String(contentsOfFile: "\(self.directory.path)/dovecot.log", encoding: .utf8)) ?? ""
        return String(log.suffix(octets))
    }

    /// Stops the server by its pid and removes its files.
    public func stop() async {
        await self.process.stop()
        try? FileManager.default.removeItem(at: self.directory)
    }

    /// Stops the whole server (its master by pid, which ends every session process) and starts it again on the
    /// same port with the same configuration and maildirs: the upstream restarted under load.
    public func restart() async throws {
        await self.process.stop()
        let d = self.directory.path
        let started = { ((try? String(contentsOfFile: "\(d)/dovecot.log", encoding: .utf8)) ?? "") }
        let before = started().components(separatedBy: "starting up").count
        for _ in 0..<50 {
            let process = try ChildProcess("/usr/sbin/dovecot", ["-F", "-c", "\(d)/dovecot.conf"])
            for _ in 0..<200 where process.isRunning {
                if started().components(separatedBy: "starting up").count > before {
                    self.process = process
                    return
                }
                try await Task.sleep(for: .milliseconds(25))
            }
            // Its port was taken while it was down (a connection's local port, say): try again.
            process.signal(SIGKILL)
            _ = await process.wait(seconds: 5)
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure(description: "Dovecot did not start again on port \(self.port): \(self.logTail())")
    }

    /// Kills the processes serving logged-in sessions (SIGKILL, found by their parent's pid): the upstream dies
    /// mid-session while the master stays up. Returns how many it killed.
    @discardableResult
    public func killSessions() -> Int {
        var killed = 0
        for pid in childProcesses(of: self.process.pid) {
            let command = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
            if command.hasPrefix("dovecot/pop3") && !command.hasPrefix("dovecot/pop3-login") {
                Glibc.kill(pid, SIGKILL)
                killed += 1
            }
        }
        return killed
    }

    deinit {
        self.process.signal(SIGTERM)
    }

    static func chown(_ path: String) throws {
        let enumerator = FileManager.default.enumerator(atPath: path)
        var paths = [path]
        while let sub = enumerator?.nextObject() as? String { paths.append(path + "/" + sub) }
        for p in paths {
            try FileManager.default.setAttributes(
                [.ownerAccountID: mailUID, .groupOwnerAccountID: mailUID],
                ofItemAtPath: p
            )
        }
    }

    /// Ports handed out in this test process, so that two tests never get the same one.
    private static let handedOut = NIOLockedValueBox<Set<Int>>([])

    /// A port nothing listens on right now, and that no other test of this process was given.
    public static func freePort() throws -> Int {
        while true {
            let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0).wait()
            let port = channel.localAddress?.port ?? 0
            try channel.close().wait()
            if Self.handedOut.withLockedValue({ $0.insert(port).inserted }) { return port }
        }
    }

    /// A loopback port that refuses connections for as long as the returned socket stays open: it is bound but
    /// not listening, so nothing else can listen there and no outgoing connection takes it as its own port (a
    /// connection to a merely free port can, rarely, connect to itself). Close `descriptor` when done.
    public static func refusingPort() throws -> (port: Int, descriptor: Int32) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw Failure(description: "cannot bind a loopback port")
        }
        return (Int(UInt16(bigEndian: address.sin_port)), fd)
    }

    public static func waitForPort(_ port: Int, timeout: TimeInterval = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let channel = try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).wait()
            {
                // A connection to a port nobody listens on can, rarely, get that same port as its own and
                // connect to itself; it would hold the port the server is about to bind.
                let selfConnected = channel.localAddress?.port == port
                try? channel.close().wait()
                if !selfConnected { return }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw Failure(description: "nothing listens on 127.0.0.1:\(port) after \(timeout) s")
    }
}
