import NIOCore
import POP3Core
import POP3Rules

/// A `host:port` pair: `127.0.0.1:110`, `[::1]:110`, `mail.example.org:110`, or a POP URL
/// `pop://host[:port]` (RFC 2384 §3–4, default port 110; R48).
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses `text`; `defaultPort` applies to a POP URL without a port. `listening` allows port 0 (any free port).
    public init(parsing text: String, defaultPort: Int? = nil, listening: Bool = false) throws {
        var rest = Substring(text)
        var portDefault = defaultPort
        if rest.lowercased().hasPrefix("pop://") {
            rest = rest.dropFirst(6)
            portDefault = 110
            // RFC 2384: pop://[user[;AUTH=...]@]host[:port]; the user part is the client's business here.
            if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
            if rest.hasSuffix("/") { rest = rest.dropLast() }
        }
        let host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw ParseError(description: "\"\(text)\": an IPv6 address needs its closing \"]\"")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw ParseError(description: "\"\(text)\": expected \":PORT\" after \"]\"")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
            // "2001:db8::1:110" reads as host "2001:db8::1" and port 110, or as "2001:db8:" and port 1: neither
            // is safe to guess.
            guard !host.contains(":") else {
                throw ParseError(description: "\"\(text)\": an IPv6 address goes in brackets, as [2001:db8::1]:110")
            }
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw ParseError(description: "\"\(text)\" has no host") }
        // The resolver reads a C string: a NUL (or any control character) would cut or garble the name.
        guard !host.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0x20 }) else {
            throw ParseError(description: "\(text.debugDescription): the host has a space or a control character")
        }
        let port: Int
        if let portText {
            guard let value = Int(portText), ((listening ? 0 : 1)...65535).contains(value) else {
                throw ParseError(
                    description: "\"\(text)\": the port must be a number from \(listening ? 0 : 1) to 65535"
                )
            }
            port = value
        } else if let portDefault {
            port = portDefault
        } else {
            throw ParseError(description: "\"\(text)\" needs a port, as HOST:PORT")
        }
        self.host = String(host)
        self.port = port
    }

    public var description: String {
        self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }
}

/// Everything `popgate serve` can be told, by flags or by its YAML file.
public struct RelayConfiguration: Sendable, Hashable {
    /// Addresses that accept clients, all forwarding to one upstream.
    public struct Listener: Sendable, Hashable {
        /// What metrics and the live page call this listener (`name:` in the config); never an address, which
        /// would make a label of what operators must not publish.
        public var name: String?
        public var listen: [Endpoint]
        /// Addresses whose clients speak TLS from the first octet (POP3S, RFC 8314); they need `certificate`.
        public var listenTLS: [Endpoint] = []
        public var upstream: Endpoint
        /// The gateway's certificate chain and key (PEM, or DER for the key): with them it terminates TLS on
        /// `listenTLS` and answers STLS itself on `listen`.
        public var certificate: String?
        public var key: String?
        /// On `listen`: USER, PASS, APOP and AUTH before STLS are refused, not forwarded.
        public var requireTLS = false
        /// More certificates, each for the server names a client may ask for (SNI); `certificate` is the
        /// default, for clients that name none or a name none of these has.
        public var namedCertificates: [NamedCertificate] = []
        /// A server name that matches no certificate ends the handshake instead of getting the default.
        public var strictNames = false
        /// How the gateway speaks TLS to the upstream.
        public var upstreamTLS: UpstreamTLSMode = .none
        /// The CA file the upstream's certificate must chain to; the system's when nil.
        public var upstreamCA: String?
        /// The name the upstream's certificate must hold (and the SNI sent); the upstream's host when nil.
        public var upstreamServerName: String?
        /// Off only by an explicit, logged choice, for legacy servers with self-signed certificates.
        public var upstreamVerify = true
        public var upstreamTLSMinimum: TLSFloor = .tls12
        /// Every connection starts with a PROXY protocol header (v1 or v2) from a balancer in `proxyTrusted`:
        /// the client it names is the one the rules, transcripts and logs see.
        public var proxyProtocol = false

        public init(listen: [Endpoint], upstream: Endpoint) {
            self.listen = listen
            self.upstream = upstream
        }

        /// What is missing for this listener's TLS settings to make sense, if anything.
        public var tlsProblem: String? {
            if (self.certificate == nil) != (self.key == nil) {
                return self.certificate == nil ? "a key needs its certificate (cert)" : "a certificate needs its key"
            }
            if !self.listenTLS.isEmpty, self.certificate == nil { return "a TLS listener needs a certificate and key" }
            if !self.namedCertificates.isEmpty, self.certificate == nil {
                return "certificates by name need a default certificate and key"
            }
            if self.upstreamTLS != .none, self.upstreamVerify, self.upstreamServerName == nil,
                self.upstream.host.contains(":")
                    || self.upstream.host.split(separator: ".").allSatisfy({ Int($0) != nil })
            {
                return
                    "an upstream given by IP address needs upstream-server-name, the name its certificate holds (or upstream-no-verify)"
            }
            if self.requireTLS, self.certificate == nil {
                return "require-tls needs a certificate and key, so that clients can use STLS"
            }
            return nil
        }
    }

    public enum UpstreamTLSMode: String, Sendable, Hashable, CaseIterable {
        case none
        /// TLS from the first octet (POP3S).
        case implicit
        /// STLS after the greeting, before the client's first command.
        case starttls
    }

    /// A certificate and key for some server names (`*.example.org` covers one label).
    public struct NamedCertificate: Sendable, Hashable {
        public var names: [String]
        public var certificate: String
        public var key: String

        public init(names: [String], certificate: String, key: String) {
            self.names = names
            self.certificate = certificate
            self.key = key
        }
    }

    /// The oldest TLS version clients may use (NIOSSL's own floor is TLS 1.0: it is set here always).
    public enum TLSFloor: String, Sendable, Hashable, CaseIterable {
        case tls10 = "1.0"
        case tls11 = "1.1"
        case tls12 = "1.2"
        case tls13 = "1.3"
    }

    public var listeners: [Listener] = []
    /// The live page, its API and the metrics: an HTTP listener, loopback unless said otherwise.
    public var http: Endpoint?
    /// When set, the page, the API and /metrics want it as a bearer token (health checks do not).
    public var httpToken: String?
    /// Where each session's transcript (text and JSON lines) is written; nil for none.
    public var transcripts: String?
    /// Where each session's plaintext is written as a pcap file (secrets masked); nil for none.
    public var pcap: String?
    /// Print every session's annotated transcript on standard output.
    public var live = false
    /// Put message bodies in transcripts instead of a summary.
    public var transcriptBodies = false
    /// RFC 1939 §3: the autologout timer is at least 10 minutes.
    public var idleTimeout: TimeAmount = .minutes(10)
    public var connectTimeout: TimeAmount = .seconds(10)
    public var greetingTimeout: TimeAmount = .seconds(30)
    /// From a command line's first octet to its end: a client that drips a line is cut (nginx mail's `timeout`).
    public var lineTimeout: TimeAmount = .seconds(60)
    /// From the connection to a finished login (Dovecot's pre-login limit is 3 minutes).
    public var loginTimeout: TimeAmount = .minutes(3)
    /// From a TLS client's connection to the end of its handshake.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// The oldest TLS version a client may use.
    public var tlsMinimumVersion: TLSFloor = .tls12
    /// How long open sessions may run on after SIGTERM or SIGINT.
    public var shutdownGrace: TimeAmount = .seconds(10)
    /// After the grace period, how long the sessions then ended may take to close and write their end records.
    public var shutdownDrain: TimeAmount = .seconds(5)
    /// How long the upstream may take to answer the QUIT of a client that has already gone (it commits then).
    public var quitReplyTimeout: TimeAmount = .seconds(5)
    /// RFC 2449 §4 / R3: the longest client line the gateway forwards.
    public var commandLineLimit = POP3Defaults.commandLineLimit
    /// Sessions open at once; past it a client is told the gateway is at capacity. Nil: derived from the
    /// descriptor limit (``maximumSessions(descriptorLimit:)``).
    public var maxConnections: Int?
    /// Listening sockets take SO_REUSEPORT: several popgate processes may listen on one port and the kernel
    /// spreads the connections among them (as nginx's workers share theirs), for more sessions than one
    /// process's descriptor limit holds. Read at start only, like the listeners.
    public var reusePort = false
    /// Transcript and pcap octets the disk may be behind on, in all (a file may be half of it behind);
    /// past it a file ends with a note and the session goes on without it.
    public var outputBuffer = 64 << 20
    /// The rules file (`Rules/*.rules`) every listener enforces; nil for none. Read again on SIGHUP and when it
    /// or a file it includes changes.
    public var rules: String?
    /// The balancers whose PROXY protocol headers are believed; a connection from anywhere else to a
    /// `proxyProtocol` listener is closed.
    public var proxyTrusted = AddressSet()
    /// From the connection to the PROXY header's last octet.
    public var proxyHeaderTimeout: TimeAmount = .seconds(5)

    public init() {}

    /// Descriptors kept free for listeners, logs, the output writer's one open file and the process itself.
    public static let reservedDescriptors = 32

    /// The sessions that fit in `descriptorLimit` descriptors: two sockets each (their transcript and pcap
    /// files are opened only while the output writer writes them, one at a time).
    public func maximumSessions(descriptorLimit: Int) -> Int {
        if let maxConnections { return maxConnections }
        return max(1, (descriptorLimit - Self.reservedDescriptors) / 2)
    }
}
