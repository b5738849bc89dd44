import NIOCore
import POP3Core
import POP3Live
import POP3Relay
import POP3Rules
import Yams

/// Reads `popgate serve --config FILE`: YAML that can say everything the flags can, and more than one
/// listener with its own upstream.
///
/// ```yaml
/// listeners:
///   - listen: [127.0.0.1:1110, "[::1]:1110"]
///     upstream: mail.example.org:110
///   - listen: 127.0.0.1:2110
///     listen-tls: 127.0.0.1:2995
///     cert: /etc/popgate/cert.pem
///     key: /etc/popgate/key.pem
///     require-tls: true
///     sni:                     # more certificates, by the server name a client asks for
///       - { names: [pop.example.org, "*.mail.example.org"], cert: /etc/popgate/pop.pem, key: /etc/popgate/pop.key }
///     sni-strict: false        # true: a name no certificate has ends the handshake
///     upstream: pop://legacy.example.org
///   - listen: 0.0.0.0:3110
///     proxy-protocol: true      # behind HAProxy (send-proxy or send-proxy-v2)
///     upstream: 10.0.0.5:110
/// proxy-trusted: [10.0.0.10/32, 10.0.0.11/32]   # the balancers whose PROXY headers are believed
/// tls-min-version: "1.2"
/// transcripts: /var/log/popgate
/// pcap: /var/log/popgate/pcap
/// transcript-bodies: false
/// live: false
/// timeouts: { idle: 600, connect: 10, greeting: 30, handshake: 10, proxy-header: 5, line: 60, login: 180, quit-reply: 5, shutdown-grace: 10, shutdown-drain: 5 }
/// command-line-limit: 255
/// max-connections: 5000
/// reuse-port: false           # true: several popgate processes may share each port
/// output-buffer-mib: 64
/// rules: /etc/popgate/gateway.rules   # read again on SIGHUP and when it changes
/// http: 127.0.0.1:8110        # the live page, /api, /metrics, /healthz, /readyz (listeners' `name:` label them)
/// http-token: s3cret          # then the page, the API and /metrics want `Authorization: Bearer s3cret`
/// ```
enum ConfigFile {
    struct Problem: Error, CustomStringConvertible {
        var description: String
    }

    static let topLevelKeys: Set<String> = [
        "listeners", "listen", "upstream", "transcripts", "pcap", "transcript-bodies", "live", "timeouts",
        "command-line-limit", "max-connections", "reuse-port", "output-buffer-mib", "listen-tls", "cert", "key",
        "require-tls",
        "sni", "sni-strict", "tls-min-version", "upstream-tls", "upstream-ca", "upstream-server-name",
        "upstream-no-verify", "upstream-tls-min-version", "rules", "proxy-protocol", "proxy-trusted", "http",
        "http-token",
    ]
    static let listenerKeys: Set<String> = [
        "name", "listen", "listen-tls", "upstream", "cert", "key", "require-tls", "sni", "sni-strict", "upstream-tls",
        "upstream-ca", "upstream-server-name", "upstream-no-verify", "upstream-tls-min-version", "proxy-protocol",
    ]
    static let timeoutKeys: Set<String> = [
        "idle", "connect", "greeting", "handshake", "proxy-header", "line", "login", "quit-reply", "shutdown-grace",
        "shutdown-drain",
    ]

    /// A listener's name: what Prometheus accepts in a label value without quoting worries, and short.
    static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
                    || $0 == "_"
            }
    }

    /// A YAML node as plain values: mappings keyed by their text, sequences, scalars as Yams resolves them
    /// (`10` an Int, `true` a Bool), merge keys (`<<: *defaults`) applied. Not `Yams.load`, which stops the
    /// process on a mapping key that is not a scalar (`? [a]: b`, found by fuzz-config): a reload must refuse
    /// such a file, not take the gateway down.
    static func plain(_ node: Node, path: String) throws -> Any {
        switch node {
        case .scalar(let scalar):
            // Yams reads a YAML 1.1 base-60 integer (`1:30`) with unchecked arithmetic: a long one stopped the
            // process (found by fuzz-config). Integers are read here; one that is not a number within Int stays
            // text, and the setting that wanted a number says so.
            if node.tag.rawValue == Tag.Name.int.rawValue { return Self.integer(scalar.string) ?? scalar.string }
            return node.any
        case .sequence(let sequence):
            return try sequence.map { try Self.plain($0, path: path) }
        case .mapping(let mapping):
            var merged: [String: Any] = [:]
            var own: [String: Any] = [:]
            for (key, value) in mapping {
                guard case .scalar(let scalar) = key else {
                    throw Problem(description: "\(path): line \(key.mark?.line ?? 0): a key must be plain text")
                }
                if scalar.string == "<<", scalar.style == .plain {
                    // Each merged mapping adds what is not set already; the mapping's own keys win.
                    let sources = value.sequence.map(Array.init) ?? [value]
                    for source in sources {
                        guard let entries = try Self.plain(source, path: path) as? [String: Any] else {
                            throw Problem(description: "\(path): line \(source.mark?.line ?? 0): << merges mappings")
                        }
                        merged.merge(entries) { first, _ in first }
                    }
                } else {
                    own[scalar.string] = try Self.plain(value, path: path)
                }
            }
            return merged.merging(own) { _, mine in mine }
        case .alias:
            throw Problem(description: "\(path): line \(node.mark?.line ?? 0): an alias that names no anchor")
        }
    }

    /// A YAML integer as Yams reads one (underscores left out, a sign, 0x, 0b, 0o or a leading 0), but nil for a
    /// base-60 one or one beyond Int, where Yams traps.
    static func integer(_ text: String) -> Int? {
        let digits = text.replacingOccurrences(of: "_", with: "")
        guard !digits.contains(":") else { return nil }
        if digits == "0" { return 0 }
        let negative = digits.hasPrefix("-")
        var rest = Substring(digits)
        if negative || rest.hasPrefix("+") { rest = rest.dropFirst() }
        var radix = 10
        for (prefix, base) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where rest.hasPrefix(prefix) {
            radix = base
            rest = rest.dropFirst(prefix.count)
            break
        }
        // Int(_:radix:) takes a sign of its own: one after the prefix is not a YAML integer.
        guard let first = rest.first, first != "-", first != "+", let magnitude = Int(rest, radix: radix) else {
            return nil
        }
        return negative ? -magnitude : magnitude
    }

    /// Applies `text` (the file at `path`) on top of `configuration`.
    static func apply(_ text: String, path: String, to configuration: inout RelayConfiguration) throws {
        func problem(_ key: String, _ what: String) -> Problem {
            Problem(description: "\(path): \(key): \(what)")
        }
        let root: Any?
        do {
            root = try Yams.compose(yaml: text).map { try Self.plain($0, path: path) }
        } catch let problem as Problem {
            throw problem
        } catch {
            throw Problem(description: "\(path): not valid YAML: \(error)")
        }
        guard let map = root as? [String: Any] else {
            throw Problem(description: "\(path): expected a mapping of settings at the top level")
        }
        for key in map.keys.sorted() where !topLevelKeys.contains(key) {
            throw problem(key, "unknown setting; known ones are \(topLevelKeys.sorted().joined(separator: ", "))")
        }

        func endpoints(_ value: Any, key: String) throws -> [Endpoint] {
            let items: [Any] = (value as? [Any]) ?? [value]
            guard !items.isEmpty else { throw problem(key, "needs at least one HOST:PORT") }
            return try items.enumerated().map { index, item in
                let itemKey = items.count > 1 || value is [Any] ? "\(key)[\(index)]" : key
                guard let text = item as? String ?? (item as? Int).map(String.init) else {
                    throw problem(itemKey, "expected HOST:PORT as text")
                }
                do { return try Endpoint(parsing: text, listening: true) } catch { throw problem(itemKey, "\(error)") }
            }
        }
        func listener(_ map: [String: Any], key: String) throws -> RelayConfiguration.Listener {
            func sub(_ name: String) -> String { key.isEmpty ? name : "\(key).\(name)" }
            for k in map.keys.sorted() where !listenerKeys.contains(k) {
                throw problem(
                    sub(k),
                    "unknown setting; a listener has \(listenerKeys.sorted().joined(separator: ", "))"
                )
            }
            guard map["listen"] != nil || map["listen-tls"] != nil else {
                throw problem(sub("listen"), "missing (or listen-tls)")
            }
            guard let upstreamValue = map["upstream"] else { throw problem(sub("upstream"), "missing") }
            guard let upstreamText = upstreamValue as? String else {
                throw problem(sub("upstream"), "expected HOST:PORT or pop://HOST[:PORT]")
            }
            let upstream: Endpoint
            do { upstream = try Endpoint(parsing: upstreamText) } catch { throw problem(sub("upstream"), "\(error)") }
            var listener = RelayConfiguration.Listener(
                listen: try map["listen"].map { try endpoints($0, key: sub("listen")) } ?? [],
                upstream: upstream
            )
            if let value = map["name"] {
                guard let name = value as? String, Self.validName(name) else {
                    throw problem(
                        sub("name"),
                        "expected a name of letters, digits, - and _ (it becomes a metrics label)"
                    )
                }
                listener.name = name
            }
            listener.listenTLS = try map["listen-tls"].map { try endpoints($0, key: sub("listen-tls")) } ?? []
            for name in ["cert", "key"] {
                guard let value = map[name] else { continue }
                guard let file = value as? String, !file.isEmpty else { throw problem(sub(name), "expected a file") }
                if name == "cert" { listener.certificate = file } else { listener.key = file }
            }
            if let value = map["require-tls"] {
                guard let flag = value as? Bool else { throw problem(sub("require-tls"), "expected true or false") }
                listener.requireTLS = flag
            }
            if let value = map["proxy-protocol"] {
                guard let flag = value as? Bool else {
                    throw problem(sub("proxy-protocol"), "expected true or false")
                }
                listener.proxyProtocol = flag
            }
            if let value = map["upstream-tls"] {
                guard let text = value as? String, let mode = RelayConfiguration.UpstreamTLSMode(rawValue: text) else {
                    throw problem(sub("upstream-tls"), "expected none, implicit or starttls")
                }
                listener.upstreamTLS = mode
            }
            for name in ["upstream-ca", "upstream-server-name"] {
                guard let value = map[name] else { continue }
                guard let text = value as? String, !text.isEmpty else { throw problem(sub(name), "expected text") }
                if name == "upstream-ca" { listener.upstreamCA = text } else { listener.upstreamServerName = text }
            }
            if let value = map["upstream-no-verify"] {
                guard let flag = value as? Bool else {
                    throw problem(sub("upstream-no-verify"), "expected true or false")
                }
                listener.upstreamVerify = !flag
            }
            if let value = map["upstream-tls-min-version"] {
                let text = (value as? String) ?? (value as? Double).map { String($0) } ?? ""
                guard let floor = RelayConfiguration.TLSFloor(rawValue: text) else {
                    throw problem(sub("upstream-tls-min-version"), "expected one of 1.0, 1.1, 1.2, 1.3 (as text)")
                }
                listener.upstreamTLSMinimum = floor
            }
            if let value = map["sni-strict"] {
                guard let flag = value as? Bool else { throw problem(sub("sni-strict"), "expected true or false") }
                listener.strictNames = flag
            }
            if let value = map["sni"] {
                guard let entries = value as? [Any] else {
                    throw problem(sub("sni"), "expected a list of names, cert, key")
                }
                for (index, item) in entries.enumerated() {
                    let entryKey = sub("sni[\(index)]")
                    guard let entry = item as? [String: Any], let cert = entry["cert"] as? String,
                        let key = entry["key"] as? String
                    else { throw problem(entryKey, "expected names, cert and key") }
                    let names = (entry["names"] as? [Any] ?? [entry["names"] as Any]).compactMap { $0 as? String }
                    guard !names.isEmpty else { throw problem(entryKey, "names: expected at least one server name") }
                    listener.namedCertificates.append(.init(names: names, certificate: cert, key: key))
                }
            }
            if let problemText = listener.tlsProblem { throw problem(key.isEmpty ? "listen-tls" : key, problemText) }
            return listener
        }

        if let list = map["listeners"] {
            guard let items = list as? [Any] else { throw problem("listeners", "expected a list of listeners") }
            for (index, item) in items.enumerated() {
                guard let entry = item as? [String: Any] else {
                    throw problem("listeners[\(index)]", "expected listen and upstream")
                }
                configuration.listeners.append(try listener(entry, key: "listeners[\(index)]"))
            }
        }
        if map["listen"] != nil || map["listen-tls"] != nil || map["upstream"] != nil {
            var shorthand: [String: Any] = [:]
            for name in listenerKeys { shorthand[name] = map[name] }
            configuration.listeners.append(try listener(shorthand, key: ""))
        }
        if let value = map["proxy-trusted"] {
            let items: [Any] = (value as? [Any]) ?? [value]
            var prefixes: [RulePrefix] = []
            for (index, item) in items.enumerated() {
                let itemKey = value is [Any] ? "proxy-trusted[\(index)]" : "proxy-trusted"
                guard let text = item as? String else { throw problem(itemKey, "expected an address or prefix") }
                do { prefixes.append(try RulePrefix(parsing: text)) } catch { throw problem(itemKey, "\(error)") }
            }
            configuration.proxyTrusted = AddressSet(prefixes)
        }
        if let value = map["tls-min-version"] {
            let text = (value as? String) ?? (value as? Double).map { String($0) } ?? ""
            guard let floor = RelayConfiguration.TLSFloor(rawValue: text) else {
                throw problem("tls-min-version", "expected one of 1.0, 1.1, 1.2, 1.3 (as text: \"1.2\")")
            }
            configuration.tlsMinimumVersion = floor
        }
        if let value = map["transcripts"] {
            guard let directory = value as? String, !directory.isEmpty else {
                throw problem("transcripts", "expected a directory")
            }
            configuration.transcripts = directory
        }
        if let value = map["pcap"] {
            guard let directory = value as? String, !directory.isEmpty else {
                throw problem("pcap", "expected a directory")
            }
            configuration.pcap = directory
        }
        if let value = map["http"] {
            guard let text = value as? String else { throw problem("http", "expected HOST:PORT") }
            do { configuration.http = try Endpoint(parsing: text, listening: true) } catch {
                throw problem("http", "\(error)")
            }
        }
        if let value = map["http-token"] {
            guard let token = value as? String, !token.isEmpty else { throw problem("http-token", "expected text") }
            if let why = LiveHTTP.tokenProblem(token) { throw problem("http-token", why) }
            configuration.httpToken = token
        }
        if let value = map["rules"] {
            guard let file = value as? String, !file.isEmpty else { throw problem("rules", "expected a rules file") }
            configuration.rules = file
        }
        if let value = map["transcript-bodies"] {
            guard let flag = value as? Bool else { throw problem("transcript-bodies", "expected true or false") }
            configuration.transcriptBodies = flag
        }
        if let value = map["live"] {
            guard let flag = value as? Bool else { throw problem("live", "expected true or false") }
            configuration.live = flag
        }
        if let value = map["reuse-port"] {
            guard let flag = value as? Bool else { throw problem("reuse-port", "expected true or false") }
            configuration.reusePort = flag
        }
        if let value = map["max-connections"] {
            guard let limit = value as? Int, limit >= 1 else {
                throw problem("max-connections", "expected a number of sessions, at least 1")
            }
            configuration.maxConnections = limit
        }
        if let value = map["output-buffer-mib"] {
            guard let mib = value as? Int, (1...65536).contains(mib) else {
                throw problem("output-buffer-mib", "expected a number of MiB from 1 to 65536")
            }
            configuration.outputBuffer = mib << 20
        }
        if let value = map["command-line-limit"] {
            // At most the SASL line's limit: the machine holds a few lines' worth, and a limit near Int.max
            // overflowed that sum at a client's first line, stopping the gateway.
            guard let limit = value as? Int, (255...POP3Defaults.saslLineLimit).contains(limit) else {
                throw problem(
                    "command-line-limit",
                    "expected a number of octets from 255 (RFC 2449 §4) to \(POP3Defaults.saslLineLimit)"
                )
            }
            configuration.commandLineLimit = limit
        }
        if let value = map["timeouts"] {
            guard let timeouts = value as? [String: Any] else {
                throw problem("timeouts", "expected a mapping of \(timeoutKeys.sorted().joined(separator: ", "))")
            }
            for (key, raw) in timeouts {
                guard timeoutKeys.contains(key) else {
                    throw problem(
                        "timeouts.\(key)",
                        "unknown; known ones are \(timeoutKeys.sorted().joined(separator: ", "))"
                    )
                }
                let seconds: Double
                if let n = raw as? Int {
                    seconds = Double(n)
                } else if let d = raw as? Double {
                    seconds = d
                } else {
                    throw problem("timeouts.\(key)", "expected a number of seconds")
                }
                guard let amount = Self.timeAmount(seconds) else {
                    throw problem("timeouts.\(key)", Self.timeoutRange)
                }
                switch key {
                case "idle": configuration.idleTimeout = amount
                case "connect": configuration.connectTimeout = amount
                case "greeting": configuration.greetingTimeout = amount
                case "handshake": configuration.handshakeTimeout = amount
                case "proxy-header": configuration.proxyHeaderTimeout = amount
                case "line": configuration.lineTimeout = amount
                case "login": configuration.loginTimeout = amount
                case "quit-reply": configuration.quitReplyTimeout = amount
                case "shutdown-drain": configuration.shutdownDrain = amount
                default: configuration.shutdownGrace = amount
                }
            }
        }
    }

    /// The longest timeout taken: a year (a number of seconds past what fits in nanoseconds would stop the
    /// gateway as it reads it).
    static let longestTimeout = 365.0 * 86_400

    static let timeoutRange = "must be more than 0 seconds and at most \(Int(longestTimeout)) (a year)"

    /// Seconds as a timeout, or nil when out of range (0 or less, past a year, not a number).
    static func timeAmount(_ seconds: Double) -> TimeAmount? {
        guard seconds > 0, seconds <= Self.longestTimeout else { return nil }
        return .nanoseconds(Int64(seconds * 1e9))
    }
}
