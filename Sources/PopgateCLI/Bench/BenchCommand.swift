import ArgumentParser
import POP3Bench
import POP3Relay

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

extension BenchRunner.Workload: ExpressibleByArgument {}
extension BenchRunner.TLSMode: ExpressibleByArgument {}

extension Popgate {
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put POP3 load on a server or a gateway: sessions per second, RETR throughput, held sessions.",
            discussion: """
                Workloads: sessions (connect, greeting, USER, PASS, STAT, LIST, RETR with --retr, QUIT; --sessions \
                in all, --concurrency at a time), retr (one session a worker retrieving --retr again and again for \
                --duration: MB/s), idle (--concurrency sessions logged in and held for --hold seconds, then NOOP, \
                STAT and QUIT each). Every run is bounded: by --sessions and by --duration, whichever comes first.

                Each worker logs in as its own user ({n} in --user is the worker's number, from 0), so POP3's \
                maildrop locks never collide: give the server bench0 … bench(C-1), or one user with --concurrency 1.

                Examples:
                  popgate bench 127.0.0.1:1110 --user alice --password wonderland --concurrency 1 --sessions 100
                  popgate bench 127.0.0.1:1110 --concurrency 50 --sessions 10000 --retr 1
                  popgate bench 127.0.0.1:995 --tls implicit --workload retr --retr 1 --duration 20
                  popgate bench 127.0.0.1:110 --tls starttls --workload idle --concurrency 1000 --hold 30
                  popgate bench 127.0.0.1:1110 --bind 127.0.0.2 --json | jq .sessions_per_second

                Exit codes: 0 when every session completed, 1 when any failed, 2 for bad options.
                """
        )

        @Argument(help: "The server or gateway: HOST:PORT or [IPv6]:PORT.")
        var target: String

        @Option(help: "sessions, retr or idle.")
        var workload: BenchRunner.Workload = .sessions

        @Option(help: "sessions: how many in all.")
        var sessions = 1000

        @Option(help: "Sessions at a time.")
        var concurrency = 10

        @Option(help: "Seconds the run may take at most (retr runs this long).")
        var duration = 30.0

        @Option(help: "The user; {n} is the worker's number.")
        var user = "bench{n}"

        @Option(
            help: "The password; {n} is the worker's number (default: $POPGATE_BENCH_PASSWORD, else bench-password)."
        )
        var password: String?

        @Option(help: "RETR this message: in each session (sessions), or again and again (retr; default 1).")
        var retr: Int?

        @Option(help: "none, implicit (POP3S) or starttls.")
        var tls: BenchRunner.TLSMode = .none

        @Option(help: "The name the server's certificate holds, sent as SNI.")
        var serverName: String?

        @Flag(help: "Verify the server's certificate (against --ca or the system's roots); off by default.")
        var verify = false

        @Option(help: "CA certificates (PEM) for --verify.", completion: .file())
        var ca: String?

        @Option(help: "The source address to connect from.")
        var bind: String?

        @Option(help: "Seconds to wait for each reply.")
        var timeout = 10.0

        @Option(help: "idle: seconds to hold the sessions once all are logged in.")
        var hold = 10.0

        @Flag(help: "The report as one JSON object on standard output.")
        var json = false

        func validate() throws {
            guard (try? Endpoint(parsing: self.target)) != nil else {
                throw ValidationError("the target is HOST:PORT or [IPv6]:PORT, not \(self.target)")
            }
            guard (1...1_000_000_000).contains(self.sessions) else { throw ValidationError("--sessions: 1 or more") }
            guard (1...100_000).contains(self.concurrency) else {
                throw ValidationError("--concurrency: 1 to 100000")
            }
            guard self.duration > 0, self.duration <= 86_400 else {
                throw ValidationError("--duration: more than 0, at most 86400 seconds (every run is bounded)")
            }
            guard self.timeout > 0, self.timeout <= 86_400, self.hold >= 0, self.hold <= 86_400 else {
                throw ValidationError("--timeout (more than 0) and --hold: seconds, at most 86400")
            }
            if let retr, retr < 1 { throw ValidationError("--retr: a message number, 1 or more") }
            if self.ca != nil, !self.verify { throw ValidationError("--ca goes with --verify") }
        }

        func run() async throws {
            let endpoint = try Endpoint(parsing: self.target)
            var options = BenchRunner.Options(host: endpoint.host, port: endpoint.port)
            options.workload = self.workload
            options.sessions = self.sessions
            options.concurrency = self.concurrency
            options.duration = self.duration
            options.user = self.user
            options.password =
                self.password ?? ProcessInfo.processInfo.environment["POPGATE_BENCH_PASSWORD"] ?? "bench-password"
            options.retr = self.retr
            options.tls = self.tls
            options.serverName = self.serverName
            options.verify = self.verify
            options.caFile = self.ca
            options.bind = self.bind
            options.timeout = self.timeout
            options.hold = self.hold
            let terminal = Terminal.shared
            let showProgress = !self.json && isatty(STDERR_FILENO) == 1
            let total = self.workload == .sessions ? self.sessions : self.concurrency
            @Sendable func show(_ now: BenchRunner.Progress) {
                let rate = now.seconds > 0 ? Double(now.completed) / now.seconds : 0
                let line =
                    "  \(now.completed + now.failed)/\(total) sessions, \(now.failed) failed, \(Int(rate))/s, "
                    + "\(Int(now.seconds)) s"
                terminal.progress(line)
            }
            let report: BenchReport
            do {
                report = try await BenchRunner.run(options, progress: showProgress ? show : nil)
            } catch {
                terminal.error("popgate bench: \(error)")
                throw ExitCode(2)
            }
            if showProgress { terminal.progress(nil) }
            terminal.write(self.json ? [report.json] : report.text)
            if report.failed > 0 || report.completed == 0 { throw ExitCode(1) }
        }
    }
}
