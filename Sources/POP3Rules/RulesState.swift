/// What the rules decide about a connection, a login or a command, and the counts behind it: a pure struct,
/// time given as seconds on any steady clock, so tests never sleep. The relay holds one, behind a lock, and asks
/// it at admission, before each login and on each login's failure.
public struct RulesState: Sendable {
    public enum Admission: Sendable, Hashable {
        /// Admitted and counted; the ticket goes back to ``sessionEnded(_:)``.
        case admit(Ticket)
        /// An `allow from`/`deny from` line refused the address.
        case denied(Rules.Access)
        /// A connection-rate or concurrency limit refused it, for now.
        case limited(Rules.Limit)

        public var admitted: Bool {
            if case .admit = self { return true }
            return false
        }
    }

    /// What an admitted session was counted in: handed back when it ends, so that a reload that adds a
    /// concurrency limit does not take off sessions it never counted.
    public struct Ticket: Sendable, Hashable {
        let address: RuleAddress
        let sessionLimits: [LimitID]
    }

    /// A limit line by what it counts: its kind, its key and which of the lines with that kind and key it is.
    /// Counts carry over a reload for the lines whose identity stays (a changed number applies to the count).
    struct LimitID: Hashable, Sendable {
        var kind: Rules.Limit.Kind
        var key: Rules.Key
        var occurrence: Int
    }

    /// The times of one key's events within a limit's window, oldest first, at most the limit's count of them:
    /// expired ones are dropped from the front, so each event costs O(1) however high the limit.
    struct Window: Sendable {
        private var times: [Double] = []
        private var head = 0

        /// Events later than `now - window`, once the older ones are dropped.
        mutating func recent(now: Double, window: Double) -> Int {
            while self.head < self.times.count, now - self.times[self.head] >= window { self.head += 1 }
            return self.times.count - self.head
        }

        mutating func add(_ time: Double, keeping limit: Int) {
            self.times.append(time)
            if self.times.count - self.head > limit { self.head = self.times.count - limit }
            if self.head >= 32, self.head * 2 >= self.times.count {
                self.times.removeFirst(self.head)
                self.head = 0
            }
        }

        mutating func clear() {
            self.times.removeAll()
            self.head = 0
        }

        /// Whether any event is later than `now - window`.
        func live(now: Double, window: Double) -> Bool { self.times.last.map { now - $0 < window } ?? false }
    }

    /// What a limit counts by: an address (IPv6 grouped by its prefix) or a user name.
    enum Counter: Hashable, Sendable {
        case v4(UInt32)
        case v6(UInt128)
        case user(String)
    }

    public let rules: Rules
    private let ids: [LimitID]
    /// Connection times per limit line and key, the oldest first; at most `count` kept.
    private var connections: [LimitID: [Counter: Window]] = [:]
    /// Open sessions per limit line and key.
    private var sessions: [LimitID: [Counter: Int]] = [:]
    /// Failure times per limit line and key.
    private var failures: [LimitID: [Counter: Window]] = [:]
    /// When each blocked key may log in again, per limit line.
    private var blocks: [LimitID: [Counter: Double]] = [:]
    /// Changes since the last sweep of keys whose times have all expired, so that the maps stay as large as
    /// the clients seen within the windows, not all clients ever seen.
    private var changes = 0

    public init(_ rules: Rules) {
        self.rules = rules
        var seen: [String: Int] = [:]
        self.ids = rules.limits.map { limit in
            let name = "\(limit.kind.rawValue) \(limit.key)"
            defer { seen[name, default: 0] += 1 }
            return LimitID(kind: limit.kind, key: limit.key, occurrence: seen[name, default: 0])
        }
    }

    /// New rules, with the counts and blocks of every limit line whose kind and key are unchanged.
    public func reloaded(_ rules: Rules) -> RulesState {
        var next = RulesState(rules)
        let kept = Set(next.ids)
        next.connections = self.connections.filter { kept.contains($0.key) }
        next.sessions = self.sessions.filter { kept.contains($0.key) }
        next.failures = self.failures.filter { kept.contains($0.key) }
        next.blocks = self.blocks.filter { kept.contains($0.key) }
        return next
    }

    /// The access lines, first match wins; an address no line matches is admitted.
    public func access(_ address: RuleAddress) -> Rules.Access? {
        self.rules.access.first { $0.addresses?.contains(address) ?? true }
    }

    /// A new connection from `address` at `now`: refused by an access line or a limit, or admitted and counted
    /// (a session opened; ``sessionEnded(_:)`` closes it).
    public mutating func admit(_ address: RuleAddress, now: Double) -> Admission {
        if let access = self.access(address), !access.allow { return .denied(access) }
        for (index, limit) in self.rules.limits.enumerated() {
            let id = self.ids[index]
            let key = Self.counter(address, limit.key)
            switch limit.kind {
            case .connections:
                let recent = self.connections[id]?[key]?.recent(now: now, window: limit.window ?? 0) ?? 0
                if recent >= limit.count { return .limited(limit) }
            case .sessions:
                if (self.sessions[id]?[key] ?? 0) >= limit.count { return .limited(limit) }
            case .authFailures:
                continue
            }
        }
        // Admitted: counted for every limit that counts connections or sessions.
        var counted: [LimitID] = []
        for (index, limit) in self.rules.limits.enumerated() {
            let id = self.ids[index]
            let key = Self.counter(address, limit.key)
            switch limit.kind {
            case .connections:
                self.connections[id, default: [:]][key, default: Window()].add(now, keeping: limit.count)
            case .sessions:
                self.sessions[id, default: [:]][key, default: 0] += 1
                counted.append(id)
            case .authFailures:
                continue
            }
        }
        self.changed(now: now)
        return .admit(Ticket(address: address, sessionLimits: counted))
    }

    /// A session admitted by ``admit(_:now:)`` has ended.
    public mutating func sessionEnded(_ ticket: Ticket) {
        for (index, limit) in self.rules.limits.enumerated() where limit.kind == .sessions {
            let id = self.ids[index]
            guard ticket.sessionLimits.contains(id) else { continue }
            let key = Self.counter(ticket.address, limit.key)
            guard let open = self.sessions[id]?[key] else { continue }
            self.sessions[id]?[key] = open > 1 ? open - 1 : nil
        }
    }

    /// Whether a login from `address` as `user` is blocked at `now`: the limit that blocks it and until when.
    public func blocked(_ address: RuleAddress, user: String?, now: Double) -> (limit: Rules.Limit, until: Double)? {
        for (index, limit) in self.rules.limits.enumerated() where limit.kind == .authFailures {
            guard let key = Self.counter(address, user, limit.key), let until = self.blocks[self.ids[index]]?[key],
                until > now
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
            let id = self.ids[index]
            guard let key = Self.counter(address, user, limit.key) else { continue }
            var recent = self.failures[id]?[key] ?? Window()
            _ = recent.recent(now: now, window: limit.window ?? 0)
            recent.add(now, keeping: limit.count)
            if recent.recent(now: now, window: limit.window ?? 0) >= limit.count {
                self.blocks[id, default: [:]][key] = now + (limit.block ?? 0)
                recent.clear()
                reached = reached ?? limit
            }
            self.failures[id, default: [:]][key] = recent.live(now: now, window: limit.window ?? 0) ? recent : nil
        }
        self.changed(now: now)
        return reached
    }

    /// Whether `command` from `user` is refused, and by which line.
    public func commandDenied(_ command: String, user: String?) -> Rules.Source? {
        self.rules.commandDenied(command, user: user)
    }

    /// Whether a user name is refused, and by which line.
    public func userDenied(_ user: String) -> Rules.Source? { self.rules.userDenied(user) }

    /// How many keys the counts hold, over every limit: what a sweep keeps small.
    var keysHeld: Int {
        self.connections.values.reduce(0) { $0 + $1.count } + self.sessions.values.reduce(0) { $0 + $1.count }
            + self.failures.values.reduce(0) { $0 + $1.count } + self.blocks.values.reduce(0) { $0 + $1.count }
    }

    /// Every 4096 changes, the keys whose times have all passed are let go: amortised, each change pays for one.
    private mutating func changed(now: Double) {
        self.changes += 1
        guard self.changes >= 4096 else { return }
        self.changes = 0
        self.sweep(now: now)
    }

    mutating func sweep(now: Double) {
        for (index, limit) in self.rules.limits.enumerated() {
            let id = self.ids[index]
            let window = limit.window ?? 0
            self.connections[id] = self.connections[id]?.filter { $0.value.live(now: now, window: window) }
            self.failures[id] = self.failures[id]?.filter { $0.value.live(now: now, window: window) }
            self.blocks[id] = self.blocks[id]?.filter { $0.value > now }
        }
    }

    /// `*` matches any run of characters; case does not matter.
    static func matches(_ text: String, _ pattern: String) -> Bool {
        // ASCII (nearly every user name): on the octets as they are, no copies; every command may ask.
        if text.utf8.allSatisfy({ $0 < 0x80 }) && pattern.utf8.allSatisfy({ $0 < 0x80 }) {
            return Self.wildcard(text.utf8, pattern.utf8, star: UInt8(ascii: "*")) { Self.lower($0) == Self.lower($1) }
        }
        return Self.wildcard(Array(text.lowercased()), Array(pattern.lowercased()), star: "*", equal: ==)
    }

    private static func wildcard<C: Collection>(
        _ text: C,
        _ pattern: C,
        star: C.Element,
        equal: (C.Element, C.Element) -> Bool
    ) -> Bool where C.Element: Equatable {
        var t = text.startIndex
        var p = pattern.startIndex
        var starAt: C.Index?
        var mark = t
        while t != text.endIndex {
            if p != pattern.endIndex, pattern[p] == star {
                starAt = p
                mark = t
                p = pattern.index(after: p)
            } else if p != pattern.endIndex, equal(pattern[p], text[t]) {
                p = pattern.index(after: p)
                t = text.index(after: t)
            } else if let starAt {
                p = pattern.index(after: starAt)
                mark = text.index(after: mark)
                t = mark
            } else {
                return false
            }
        }
        while p != pattern.endIndex, pattern[p] == star { p = pattern.index(after: p) }
        return p == pattern.endIndex
    }

    private static func lower(_ octet: UInt8) -> UInt8 { octet >= 0x41 && octet <= 0x5A ? octet | 0x20 : octet }

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
