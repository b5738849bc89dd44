/// What the rules decide about a connection, a login or a command, and the counts behind it: a pure struct,
/// time given as seconds on any steady clock, so tests never sleep. The relay holds one per listener, behind a
/// lock, and asks it at admission, on each login reply and on each command.
public struct RulesState: Sendable {
    public enum Admission: Sendable, Hashable {
        case admit
        /// An `allow from`/`deny from` line refused the address.
        case denied(Rules.Source)
        /// A connection-rate or concurrency limit refused it, for now.
        case limited(Rules.Limit)
    }

    public let rules: Rules
    /// Connection times per limit line and key, the oldest first; at most `count` kept.
    private var connections: [Int: [Counter: [Double]]] = [:]
    /// Open sessions per limit line and key.
    private var sessions: [Int: [Counter: Int]] = [:]
    /// Failure times per limit line and key.
    private var failures: [Int: [Counter: [Double]]] = [:]
    /// When each blocked key may log in again, per limit line.
    private var blocks: [Int: [Counter: Double]] = [:]

    /// What a limit counts by: an address (IPv6 grouped by its prefix) or a user name.
    enum Counter: Hashable, Sendable {
        case v4(UInt32)
        case v6(UInt128)
        case user(String)
    }

    public init(_ rules: Rules) { self.rules = rules }

    /// The access lines, first match wins; an address no line matches is admitted.
    public func access(_ address: RuleAddress) -> Rules.Access? {
        self.rules.access.first { $0.addresses?.contains(address) ?? true }
    }

    /// A new connection from `address` at `now`: refused by an access line or a limit, or admitted and counted
    /// (a session opened; ``sessionEnded(_:)`` closes it).
    public mutating func admit(_ address: RuleAddress, now: Double) -> Admission {
        if let access = self.access(address), !access.allow { return .denied(access.source) }
        for (index, limit) in self.rules.limits.enumerated() {
            let key = Self.counter(address, limit.key)
            switch limit.kind {
            case .connections:
                let window = limit.window ?? 0
                let recent = (self.connections[index]?[key] ?? []).filter { now - $0 < window }
                if recent.count >= limit.count { return .limited(limit) }
            case .sessions:
                if (self.sessions[index]?[key] ?? 0) >= limit.count { return .limited(limit) }
            case .authFailures:
                continue
            }
        }
        // Admitted: counted for every limit that counts connections or sessions.
        for (index, limit) in self.rules.limits.enumerated() {
            let key = Self.counter(address, limit.key)
            switch limit.kind {
            case .connections:
                let window = limit.window ?? 0
                var recent = (self.connections[index]?[key] ?? []).filter { now - $0 < window }
                recent.append(now)
                self.connections[index, default: [:]][key] = Array(recent.suffix(limit.count))
            case .sessions:
                self.sessions[index, default: [:]][key, default: 0] += 1
            case .authFailures:
                continue
            }
        }
        return .admit
    }

    /// A session admitted by ``admit(_:now:)`` has ended.
    public mutating func sessionEnded(_ address: RuleAddress) {
        for (index, limit) in self.rules.limits.enumerated() where limit.kind == .sessions {
            let key = Self.counter(address, limit.key)
            guard let open = self.sessions[index]?[key] else { continue }
            self.sessions[index]?[key] = open > 1 ? open - 1 : nil
        }
    }

    /// Whether a login from `address` as `user` is blocked at `now`: the limit that blocks it and until when.
    public func blocked(_ address: RuleAddress, user: String?, now: Double) -> (limit: Rules.Limit, until: Double)? {
        for (index, limit) in self.rules.limits.enumerated() where limit.kind == .authFailures {
            guard let key = Self.counter(address, user, limit.key), let until = self.blocks[index]?[key], until > now
            else { continue }
            return (limit, until)
        }
        return nil
    }

    /// A login failed (a final -ERR to PASS, APOP or AUTH that is the user's doing). Returns the limit that now
    /// blocks, if this failure reached one.
    public mutating func authFailed(_ address: RuleAddress, user: String?, now: Double) -> Rules.Limit? {
        var reached: Rules.Limit?
        for (index, limit) in self.rules.limits.enumerated() where limit.kind == .authFailures {
            guard let key = Self.counter(address, user, limit.key) else { continue }
            let window = limit.window ?? 0
            var recent = (self.failures[index]?[key] ?? []).filter { now - $0 < window }
            recent.append(now)
            if recent.count >= limit.count {
                self.blocks[index, default: [:]][key] = now + (limit.block ?? 0)
                recent.removeAll()
                reached = reached ?? limit
            }
            self.failures[index, default: [:]][key] = recent
        }
        return reached
    }

    /// Whether `command` from `user` is refused, and by which line.
    public func commandDenied(_ command: String, user: String?) -> Rules.Source? {
        let verb = command.uppercased()
        return self.rules.commandDenials.first { denial in
            denial.command == verb
                && (denial.user.map { pattern in user.map { Self.matches($0, pattern) } ?? false } ?? true)
        }?.source
    }

    /// Whether a user name is refused, and by which line.
    public func userDenied(_ user: String) -> Rules.Source? {
        self.rules.deniedUsers.first { Self.matches(user, $0.pattern) }?.source
    }

    /// `*` matches any run of characters; case does not matter.
    static func matches(_ text: String, _ pattern: String) -> Bool {
        let text = Array(text.lowercased())
        let pattern = Array(pattern.lowercased())
        var t = 0
        var p = 0
        var star: Int?
        var mark = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == "*" {
                star = p
                mark = t
                p += 1
            } else if p < pattern.count, pattern[p] == text[t] {
                p += 1
                t += 1
            } else if let star {
                p = star + 1
                mark += 1
                t = mark
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }

    static func counter(_ address: RuleAddress, _ key: Rules.Key) -> Counter {
        switch (address, key) {
        case (.v4(let value), _): return .v4(value)
        case (.v6(let value), .clientIP(let length)):
            return .v6(length >= 128 ? value : value & ~(~UInt128(0) >> UInt128(length)))
        case (.v6(let value), .user): return .v6(value)
        }
    }

    static func counter(_ address: RuleAddress, _ user: String?, _ key: Rules.Key) -> Counter? {
        if case .user = key { return user.map { .user($0.lowercased()) } }
        return Self.counter(address, key)
    }
}
