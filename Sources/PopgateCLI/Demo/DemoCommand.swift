import ArgumentParser
@preconcurrency import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import POP3Live
import POP3NIO
import POP3Relay
import POP3Server
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

extension TranscriptRenderer.Format: ExpressibleByArgument {}
extension ColorChoice: ExpressibleByArgument {}

extension Popgate {
    struct Demo: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run the gateway in front of the embedded POP3 server, a scripted session through it, and show the annotated transcript.",
            discussion: """
                The script uses every RFC 1939 command and CAPA, and makes one deliberate mistake (STAT before \
                logging in) so that an anomaly shows. It goes through the gateway (popgate serve) to the \
                embedded POP3 server. Without --once both keep running and every session you open through \
                the gateway is shown live.

                Examples:
                  popgate demo --once
                  popgate demo --port 1110
                      then, in another terminal:
                      telnet 127.0.0.1 1110
                      curl pop3://alice:wonderland@127.0.0.1:1110/1
                  popgate demo --once --format json | jq .
                  popgate demo --http 8110
                      then open http://127.0.0.1:8110/ and watch each session as it happens (the classroom view)
                """
        )

        @Flag(help: "Exit after the scripted session.")
        var once = false

        @Option(help: "Loopback address to listen on.")
        var host = "127.0.0.1"

        @Option(help: "Port to listen on (0 picks a free one). Default: 1110, or a free port with --once.")
        var port: Int?

        @Option(help: "Transcript format: text or json.")
        var format: TranscriptRenderer.Format = .text

        @Option(help: "Colour: auto (when on a terminal), always or never.")
        var color: ColorChoice = .auto

        @Option(help: "Serve the .eml files of this directory instead of the sample messages.", completion: .directory)
        var maildrop: String?

        @Flag(help: "Show message bodies line by line instead of a summary.")
        var bodies = false

        @Option(help: "The demo user, as NAME:PASSWORD.")
        var user = "alice:wonderland"

        @Option(help: "Serve the live page (and /metrics) on HOST:PORT, loopback only (a bare PORT: 127.0.0.1).")
        var http: String?

        func validate() throws {
            guard self.host == "localhost" || self.host.hasPrefix("127.") || self.host == "::1" else {
                throw ValidationError("the demo listens on loopback only (127.0.0.0/8 or ::1), not \(self.host)")
            }
            guard self.user.contains(":") else { throw ValidationError("--user takes NAME:PASSWORD") }
            if let port, !(0...65535).contains(port) { throw ValidationError("--port must be 0 to 65535") }
            if let http {
                let endpoint = try LiveHTTP.endpoint(parsing: http)
                guard LiveHTTP.isLoopback(endpoint.host) else {
                    throw ValidationError("the demo's page listens on loopback only, not \(endpoint.host)")
                }
                guard !self.once else { throw ValidationError("--http keeps the demo running: leave out --once") }
            }
        }

        func run() async throws {
            let terminal = Terminal.shared
            let parts = self.user.split(separator: ":", maxSplits: 1).map(String.init)
            var configuration = EmbeddedPOP3Server.Configuration()
            configuration.host = self.host
            configuration.port = self.port ?? (self.once ? 0 : 1110)
            configuration.users = [parts[0]: parts.count > 1 ? parts[1] : ""]
            if let maildrop {
                do {
                    configuration.messages = try SampleMessages.load(directory: maildrop)
                } catch {
                    throw ValidationError("cannot read the maildrop directory \(maildrop): \(error)")
                }
            }
            try await Self.run(
                configuration,
                once: self.once,
                format: self.format,
                color: self.color.enabled(for: terminal),
                bodies: self.bodies,
                http: try self.http.map(LiveHTTP.endpoint(parsing:)),
                output: { terminal.write($0) }
            )
        }

        /// The demo itself, with its output injected so tests can read it.
        /// The demo itself, with its output injected so tests can read it: the embedded server on a free port,
        /// the gateway in front of it on `configuration.host:port`, and the scripted session through the gateway.
        static func run(
            _ configuration: EmbeddedPOP3Server.Configuration,
            once: Bool,
            format: TranscriptRenderer.Format,
            color: Bool,
            bodies: Bool,
            http: Endpoint? = nil,
            output: @escaping @Sendable ([String]) -> Void
        ) async throws {
            guard let (name, password) = configuration.users.first else {
                throw ValidationError("the demo needs a user")
            }
            let host = configuration.host
            var upstreamConfiguration = configuration
            upstreamConfiguration.port = 0
            upstreamConfiguration.sink = nil
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let upstream: EmbeddedPOP3Server
            do {
                upstream = try await EmbeddedPOP3Server.start(upstreamConfiguration, group: group)
            } catch {
                try? await group.shutdownGracefully()
                throw error
            }

            let ended = NIOLockedValueBox(0)
            let printer = TranscriptPrinter(
                format: format,
                color: color,
                showBodies: bodies,
                output: output,
                onEnd: { _, _ in ended.withLockedValue { $0 += 1 } }
            )
            var relay = RelayConfiguration()
            relay.listeners = [
                .init(
                    listen: [Endpoint(host: host, port: configuration.port)],
                    upstream: Endpoint(host: host, port: upstream.port)
                )
            ]
            relay.live = true
            relay.shutdownGrace = .seconds(1)
            var logger = Logger(label: "popgate-demo")
            logger.logLevel = .error
            let watched = http.map { _ in Watched(names: ["demo"]) }
            relay.listeners[0].name = "demo"
            let gateway: RelayServer
            do {
                gateway = try RelayServer(
                    configuration: relay,
                    live: printer,
                    sinks: watched.map { [$0.board, $0.metrics] } ?? [],
                    observer: watched?.metrics,
                    logger: logger,
                    group: group
                )
                try await gateway.bind()
            } catch {
                try? await upstream.stop()
                try? await group.shutdownGracefully()
                throw ValidationError(
                    "cannot listen on \(host):\(configuration.port): \(error). Pick another with --port."
                )
            }
            let port = gateway.boundAddresses.first?.port ?? 0
            if format == .text {
                output([
                    "popgate demo: the gateway on \(host):\(port) relays to the embedded POP3 server on "
                        + "\(host):\(upstream.port) (user \(name), \(configuration.messages.count) messages).",
                    "Running the scripted session through the gateway…",
                    "",
                ])
            }
            do {
                try await DemoClient.run(
                    host: host,
                    port: port,
                    steps: DemoClient.script(user: name, password: password),
                    group: group
                )
                // The gateway's side of the session ends a moment after the client's.
                for _ in 0..<200 where ended.withLockedValue({ $0 }) == 0 {
                    try await Task.sleep(for: .milliseconds(10))
                }
            } catch {
                await gateway.shutdown()
                try? await upstream.stop()
                try? await group.shutdownGracefully()
                throw error
            }

            if !once {
                if format == .text {
                    output([
                        "",
                        "The gateway keeps running on \(host):\(port); every session through it is shown here.",
                        "Connect with:  telnet \(host) \(port)   (USER \(name), PASS \(password))",
                        "          or:  curl pop3://\(name):\(password)@\(host):\(port)/1",
                        "Stop with Ctrl-C.",
                    ])
                }
                if let http, let watched {
                    let page = LiveHTTP(
                        settings: .init(endpoint: http),
                        board: watched.board,
                        metrics: watched.metrics,
                        readiness: { await gateway.readiness() },
                        logger: logger,
                        bound: { address in
                            guard let address else { return }
                            output(["The live page: \(LiveHTTP.url(address))"])
                        }
                    )
                    let services = ServiceGroup(
                        services: [page],
                        gracefulShutdownSignals: [.sigterm, .sigint],
                        logger: logger
                    )
                    try await services.run()
                } else {
                    await waitForInterrupt()
                }
                if format == .text { output(["", "popgate demo: stopped."]) }
            }
            await gateway.shutdown()
            try await upstream.stop()
            try await group.shutdownGracefully()
        }
    }
}
