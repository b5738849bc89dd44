import ArgumentParser
import Logging
import NIOCore
import POP3Core
import POP3Live
import POP3NIO
import POP3Relay
import POP3Rules
import ServiceLifecycle
import UnixSignals

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Popgate {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Relay POP3 clients to an upstream server, reading and recording every line.",
            discussion: """
                Each client that connects is relayed to the upstream: its greeting passes through (so APOP \
                works), every byte passes unchanged, and both directions are read by the conversation machine. \
                Over-long and malformed client lines get the gateway's own -ERR. A client that vanishes never \
                causes a QUIT upstream, so nothing it marked deleted is removed.

                Examples:
                  popgate serve --listen 127.0.0.1:1110 --upstream mail.example.org:110
                  popgate serve --listen 127.0.0.1:1110 --listen [::1]:1110 --upstream 127.0.0.1:110 --live
                  popgate serve --listen 0.0.0.0:110 --upstream pop://legacy.internal --transcripts /var/log/popgate
                  popgate serve --listen 127.0.0.1:1110 --upstream 127.0.0.1:110 --pcap /tmp/pop-pcap
                  popgate serve --listen 0.0.0.0:110 --upstream 10.0.0.5:110 --max-connections 2000
                  popgate serve --listen 0.0.0.0:110 --upstream 10.0.0.5:110 --reuse-port   (run several: one port)
                  popgate serve --listen-tls 0.0.0.0:995 --cert cert.pem --key key.pem --upstream 10.0.0.5:110
                  popgate serve --listen 0.0.0.0:110 --cert cert.pem --key key.pem --require-tls --upstream 10.0.0.5:110
                      (the gateway answers STLS itself, and refuses logins before it)
                  popgate serve --listen 0.0.0.0:110 --upstream 10.0.0.5:110 --rules Rules/default.rules
                      (who may connect and how often; edit the file and new sessions follow it)
                  popgate serve --listen 0.0.0.0:110 --proxy-protocol --proxy-trusted 10.0.0.10 --upstream 10.0.0.5:110
                      (behind HAProxy's send-proxy-v2: the rules and transcripts see the real client)
                  popgate serve --listen 127.0.0.1:1110 --upstream 127.0.0.1:110 --http 127.0.0.1:8110
                      (the live page on http://127.0.0.1:8110/, with /api/sessions, /metrics, /healthz, /readyz)
                  popgate serve --config popgate.yaml      (then: kill -HUP PID to reload it)

                Signals: SIGTERM or SIGINT shut down gracefully (open sessions get --grace seconds). SIGHUP \
                reloads the configuration (the file and these flags) for new sessions; a reload that fails \
                changes nothing and logs why; listeners and output directories are kept until a restart. \
                SIGUSR1 and SIGUSR2 do nothing but log that they came.

                Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 2 for a configuration problem.
                """
        )

        @Option(
            name: .customLong("listen"),
            help: "Address to accept clients on, HOST:PORT or [IPv6]:PORT (repeatable; port 0: any free port, logged)."
        )
        var listen: [String] = []

        @Option(
            name: .customLong("listen-tls"),
            help: "Address to accept TLS clients on (POP3S, usually port 995); needs --cert and --key (repeatable)."
        )
        var listenTLS: [String] = []

        @Option(help: "The gateway's certificate chain, PEM (its own certificate first).", completion: .file())
        var cert: String?

        @Option(help: "The certificate's private key, PEM or DER.", completion: .file())
        var key: String?

        @Option(
            help: ArgumentHelp(
                "More certificates by server name (SNI): NAME[,NAME...]=CERT:KEY (repeatable; *.example.org covers one label).",
                discussion: "Clients that name no server, or one none of these has, get --cert."
            )
        )
        var sni: [String] = []

        @Flag(help: "A server name that no --sni certificate has ends the handshake instead of getting --cert.")
        var sniStrict = false

        @Flag(help: "On --listen ports: refuse USER, PASS, APOP and AUTH until the client has used STLS.")
        var requireTLS = false

        @Option(help: "The oldest TLS version clients may use: 1.0, 1.1, 1.2 or 1.3 (default 1.2).")
        var tlsMinVersion: String?

        @Option(help: "Seconds a TLS client has to finish its handshake (default 10).")
        var handshakeTimeout: Double?

        @Flag(
            help: ArgumentHelp(
                "Every connection starts with a PROXY protocol header (v1 or v2), as HAProxy's send-proxy sends.",
                discussion: "The client it names is what the rules, transcripts and logs see; needs --proxy-trusted."
            )
        )
        var proxyProtocol = false

        @Option(help: "A balancer allowed to send PROXY headers: ADDRESS or PREFIX (repeatable); others are closed.")
        var proxyTrusted: [String] = []

        @Option(help: "Seconds a balancer has to send its PROXY header (default 5).")
        var proxyHeaderTimeout: Double?

        @Option(help: "The POP3 server to relay to: HOST:PORT or pop://HOST[:PORT].")
        var upstream: String?

        @Option(help: "TLS to the upstream: none, implicit (POP3S) or starttls (default none).")
        var upstreamTLS: RelayConfiguration.UpstreamTLSMode?

        @Option(help: "CA certificates (PEM) the upstream's certificate must chain to (default: the system's).")
        var upstreamCA: String?

        @Option(help: "The name the upstream's certificate must hold, and the SNI sent (needed for an IP address).")
        var upstreamServerName: String?

        @Flag(help: "Do not verify the upstream's certificate (legacy self-signed servers); logged at every start.")
        var upstreamNoVerify = false

        @Option(help: "The oldest TLS version to use with the upstream (default 1.2; 1.0 and 1.1 for old servers).")
        var upstreamTLSMinVersion: String?

        @Option(
            help: ArgumentHelp(
                "The rules to enforce: who may connect, how often, what they may do (see popgate rules check).",
                discussion: "Read again on SIGHUP and when the file, or one it includes, changes."
            ),
            completion: .file()
        )
        var rules: String?

        @Option(help: "Write each session's transcript to DIR/ID.txt and DIR/ID.jsonl.", completion: .directory)
        var transcripts: String?

        @Option(
            help: ArgumentHelp(
                "Write each session's plaintext to DIR/ID.pcap, secrets masked keeping their length.",
                discussion: "Read them with `popgate inspect` or tshark (-d tcp.port==PORT,pop for other ports)."
            ),
            completion: .directory
        )
        var pcap: String?

        @Flag(help: "Print every session's annotated transcript on standard output.")
        var live = false

        @Flag(help: "Put message bodies in transcripts instead of a summary.")
        var transcriptBodies = false

        @Option(help: "Live transcript format: text or json.")
        var format: TranscriptRenderer.Format = .text

        @Option(help: "Colour for --live: auto, always or never.")
        var color: ColorChoice = .auto

        @Option(
            help: "Seconds without traffic before both connections close without QUIT (default 600, RFC 1939 §3)."
        )
        var idleTimeout: Double?

        @Option(help: "Seconds to wait for the upstream's TCP connection (default 10).")
        var connectTimeout: Double?

        @Option(help: "Seconds to wait for the upstream's greeting (default 30).")
        var greetingTimeout: Double?

        @Option(help: "Seconds open sessions may go on after SIGTERM/SIGINT (default 10).")
        var grace: Double?

        @Option(
            help:
                "Sessions open at once; more are told the gateway is at capacity (default: what the descriptor limit fits)."
        )
        var maxConnections: Int?

        @Flag(
            help:
                "Listen with SO_REUSEPORT, so that several popgate processes share each port (each with its own descriptor limit)."
        )
        var reusePort = false

        @Option(help: "A YAML file with any of these settings, and several listeners.", completion: .file())
        var config: String?

        @Option(
            help: ArgumentHelp(
                "Serve the live page, its JSON API and Prometheus /metrics on HOST:PORT (a bare PORT: 127.0.0.1).",
                discussion: "Pages and API: /, /api/sessions, /api/sessions/ID, /api/stream; health: /healthz, /readyz."
            )
        )
        var http: String?

        @Option(
            help: ArgumentHelp(
                "A bearer token the page, the API and /metrics want (default: $POPGATE_HTTP_TOKEN, else none).",
                discussion: "Open the page as http://HOST:PORT/?token=TOKEN; scripts send Authorization: Bearer TOKEN."
            )
        )
        var httpToken: String?

        @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
        var logLevel: String = "info"

        @Option(help: "Log lines as text, or json (one object a line, for log shippers).")
        var logFormat: LogFormat = .text

        func run() async throws {
            let configuration: RelayConfiguration
            do {
                configuration = try self.relayConfiguration()
            } catch {
                Terminal.shared.error("popgate serve: \(error)")
                throw ExitCode(2)
            }
            guard let level = Logger.Level(rawValue: self.logLevel) else {
                Terminal.shared.error("popgate serve: --log-level: unknown level \(self.logLevel)")
                throw ExitCode(2)
            }
            LogFormat.bootstrap(self.logFormat, level: level)
            let logger = Logger(label: "popgate")
            let terminal = Terminal.shared
            let live: (any ConversationSink)? =
                configuration.live
                ? TranscriptPrinter(
                    format: self.format,
                    color: self.color.enabled(for: terminal),
                    output: { terminal.write($0) }
                )
                : nil
            var gate: RulesGate?
            if let file = configuration.rules {
                let (rules, problems, _) = RulesFile.load(file)
                guard problems.isEmpty else {
                    for problem in problems { Terminal.shared.error(problem.description) }
                    Terminal.shared.error("popgate serve: \(problems.count) error(s) in the rules \(file)")
                    throw ExitCode(2)
                }
                gate = RulesGate(rules)
                logger.info("enforcing the rules in \(file): \(RulesFile.summary(rules))")
            }
            let watched = configuration.http.map { _ in
                Watched(names: configuration.listeners.enumerated().map { $1.displayName(index: $0) })
            }
            // Every signal is taken before the listeners are bound, so that one sent as soon as the log says
            // "listening" is not met by its default action (SIGTERM would end the process with 143, not a shutdown).
            let stops = await UnixSignalsSequence(trapping: .sigterm, .sigint)
            let signals = await ReloadService.trapping()
            let server: RelayServer
            do {
                server = try RelayServer(
                    configuration: configuration,
                    live: live,
                    sinks: watched.map { [$0.board, $0.metrics] } ?? [],
                    rules: gate,
                    observer: watched?.metrics,
                    logger: logger
                )
                try await server.bind()
            } catch {
                Terminal.shared.error("popgate serve: \(error)")
                throw ExitCode(2)
            }
            let command = self
            let reload = ReloadService(
                signals: signals,
                server: server,
                load: { try command.relayConfiguration() },
                logger: logger
            )
            var services: [any Service] = [server, reload]
            if let endpoint = configuration.http, let watched {
                if !LiveHTTP.isLoopback(endpoint.host), configuration.httpToken == nil {
                    logger.warning(
                        "the live page on \(endpoint) is open to anyone who reaches it: give --http-token (or http-token:)"
                    )
                }
                services.append(
                    LiveHTTP(
                        settings: .init(endpoint: endpoint, token: configuration.httpToken),
                        board: watched.board,
                        metrics: watched.metrics,
                        readiness: { await server.readiness() },
                        logger: logger
                    )
                )
            }
            let group = ServiceGroup(services: services, gracefulShutdownSignals: [], logger: logger)
            let stopping = Task {
                for await _ in stops {
                    logger.info("stopping: open sessions get the grace period")
                    await group.triggerGracefulShutdown()
                }
            }
            defer { stopping.cancel() }
            try await group.run()
        }

        /// The flags on top of the config file.
        func relayConfiguration() throws -> RelayConfiguration {
            var configuration = RelayConfiguration()
            if let path = self.config {
                let text: String
                do {
                    text = try String(contentsOfFile: path, encoding: .utf8)
                } catch {
                    throw ConfigFile.Problem(description: "\(path): cannot be read: \(error.localizedDescription)")
                }
                try ConfigFile.apply(text, path: path, to: &configuration)
            }
            if !self.listen.isEmpty || !self.listenTLS.isEmpty || self.upstream != nil {
                guard !self.listen.isEmpty || !self.listenTLS.isEmpty else {
                    throw ConfigFile.Problem(description: "--upstream needs at least one --listen or --listen-tls")
                }
                guard let upstream = self.upstream else {
                    throw ConfigFile.Problem(description: "--listen needs --upstream HOST:PORT")
                }
                let listen = try self.listen.map { text in
                    do { return try Endpoint(parsing: text, listening: true) } catch {
                        throw ConfigFile.Problem(description: "--listen: \(error)")
                    }
                }
                let listenTLS = try self.listenTLS.map { text in
                    do { return try Endpoint(parsing: text, listening: true) } catch {
                        throw ConfigFile.Problem(description: "--listen-tls: \(error)")
                    }
                }
                let target: Endpoint
                do { target = try Endpoint(parsing: upstream) } catch {
                    throw ConfigFile.Problem(description: "--upstream: \(error)")
                }
                var listener = RelayConfiguration.Listener(listen: listen, upstream: target)
                listener.listenTLS = listenTLS
                listener.certificate = self.cert
                listener.key = self.key
                listener.requireTLS = self.requireTLS
                listener.proxyProtocol = self.proxyProtocol
                if let mode = self.upstreamTLS { listener.upstreamTLS = mode }
                listener.upstreamCA = self.upstreamCA
                listener.upstreamServerName = self.upstreamServerName
                listener.upstreamVerify = !self.upstreamNoVerify
                if let text = self.upstreamTLSMinVersion {
                    guard let floor = RelayConfiguration.TLSFloor(rawValue: text) else {
                        throw ConfigFile.Problem(
                            description: "--upstream-tls-min-version: expected 1.0, 1.1, 1.2 or 1.3"
                        )
                    }
                    listener.upstreamTLSMinimum = floor
                }
                listener.strictNames = self.sniStrict
                for text in self.sni {
                    let parts = text.split(separator: "=", maxSplits: 1)
                    let files = parts.count == 2 ? parts[1].split(separator: ":", maxSplits: 1) : []
                    guard files.count == 2 else {
                        throw ConfigFile.Problem(description: "--sni \(text): expected NAME[,NAME...]=CERT:KEY")
                    }
                    listener.namedCertificates.append(
                        .init(
                            names: parts[0].split(separator: ",").map(String.init),
                            certificate: String(files[0]),
                            key: String(files[1])
                        )
                    )
                }
                if let problem = listener.tlsProblem {
                    throw ConfigFile.Problem(description: "TLS settings: \(problem)")
                }
                configuration.listeners.append(listener)
            } else if self.cert != nil || self.key != nil || self.requireTLS || self.proxyProtocol {
                throw ConfigFile.Problem(
                    description:
                        "--cert, --key, --require-tls and --proxy-protocol go with --listen or --listen-tls and --upstream"
                )
            }
            if let text = self.tlsMinVersion {
                guard let floor = RelayConfiguration.TLSFloor(rawValue: text) else {
                    throw ConfigFile.Problem(description: "--tls-min-version: expected 1.0, 1.1, 1.2 or 1.3")
                }
                configuration.tlsMinimumVersion = floor
            }
            guard !configuration.listeners.isEmpty else {
                throw ConfigFile.Problem(
                    description: "nothing to serve: give --listen and --upstream, or --config FILE"
                )
            }
            if let rules { configuration.rules = rules }
            if let http {
                do { configuration.http = try LiveHTTP.endpoint(parsing: http) } catch {
                    throw ConfigFile.Problem(description: "--http: \(error)")
                }
            }
            if let token = self.httpToken ?? ProcessInfo.processInfo.environment["POPGATE_HTTP_TOKEN"], !token.isEmpty {
                if let why = LiveHTTP.tokenProblem(token) {
                    throw ConfigFile.Problem(description: "--http-token: \(why)")
                }
                configuration.httpToken = token
            }
            if !self.proxyTrusted.isEmpty {
                configuration.proxyTrusted = AddressSet(
                    try self.proxyTrusted.map { text in
                        do { return try RulePrefix(parsing: text) } catch {
                            throw ConfigFile.Problem(description: "--proxy-trusted \(text): \(error)")
                        }
                    }
                )
            }
            if configuration.listeners.contains(where: \.proxyProtocol), configuration.proxyTrusted.rangeCount == 0 {
                throw ConfigFile.Problem(
                    description: "the PROXY protocol needs --proxy-trusted (proxy-trusted:), the balancers' addresses"
                )
            }
            if let transcripts { configuration.transcripts = transcripts }
            if let pcap { configuration.pcap = pcap }
            if self.live { configuration.live = true }
            if self.reusePort { configuration.reusePort = true }
            if self.transcriptBodies { configuration.transcriptBodies = true }
            func seconds(_ value: Double?, _ name: String) throws -> TimeAmount? {
                guard let value else { return nil }
                guard let amount = ConfigFile.timeAmount(value) else {
                    throw ConfigFile.Problem(description: "--\(name) \(ConfigFile.timeoutRange)")
                }
                return amount
            }
            if let t = try seconds(self.idleTimeout, "idle-timeout") { configuration.idleTimeout = t }
            if let t = try seconds(self.connectTimeout, "connect-timeout") { configuration.connectTimeout = t }
            if let t = try seconds(self.greetingTimeout, "greeting-timeout") { configuration.greetingTimeout = t }
            if let t = try seconds(self.handshakeTimeout, "handshake-timeout") { configuration.handshakeTimeout = t }
            if let t = try seconds(self.proxyHeaderTimeout, "proxy-header-timeout") {
                configuration.proxyHeaderTimeout = t
            }
            if let t = try seconds(self.grace, "grace") { configuration.shutdownGrace = t }
            if let limit = self.maxConnections {
                guard limit >= 1 else { throw ConfigFile.Problem(description: "--max-connections must be at least 1") }
                configuration.maxConnections = limit
            }
            return configuration
        }
    }
}

extension RelayConfiguration.UpstreamTLSMode: ExpressibleByArgument {}
