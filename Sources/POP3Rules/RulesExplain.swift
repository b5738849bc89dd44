/// What the rules would do to one client, line by line, with the line that decides each point: the answer of
/// `popgate rules explain`. Counts are not known here, so limits are said as what they allow.
public struct RulesExplanation: Sendable, Hashable {
    /// Whether the address may connect at all.
    public var admitted: Bool
    public var lines: [String]
}

extension Rules {
    /// Whether `command` from `user` is refused, and by which line.
    public func commandDenied(_ command: String, user: String?) -> Source? {
        // The verb in any case; no copy of it (every command of every session asks).
        func same(_ a: UInt8, _ b: UInt8) -> Bool {
            a & 0xDF == b & 0xDF && (a | 0x20) >= 0x61 && (a | 0x20) <= 0x7A || a == b
        }
        return self.commandDenials.first { denial in
            denial.command.utf8.elementsEqual(command.utf8, by: same)
                && (denial.user.map { pattern in user.map { RulesState.matches($0, pattern) } ?? false } ?? true)
        }?.source
    }

    /// Whether a user name is refused, and by which line.
    public func userDenied(_ user: String) -> Source? {
        self.deniedUsers.first { RulesState.matches(user, $0.pattern) }?.source
    }

    public func explain(address: RuleAddress, user: String?, tls: Bool) -> RulesExplanation {
        var lines: [String] = []
        let state = RulesState(self)
        guard let access = state.access(address) else {
            lines.append("\(address): admitted (no allow or deny line matches it; the default is allow)")
            return RulesExplanation(admitted: true, lines: lines + self.afterAdmission(address, user: user, tls: tls))
        }
        let what = access.addresses.map { "\($0.rangeCount) address range(s)" } ?? "any"
        guard access.allow else {
            let how =
                access.silent
                ? "the connection is closed without a reply"
                : "the client is told -ERR [SYS/PERM] and the connection closes, before any upstream connection"
            lines.append("\(address): refused by \(access.source) (deny from \(what)): \(how)")
            return RulesExplanation(admitted: false, lines: lines)
        }
        lines.append("\(address): admitted by \(access.source) (allow from \(what))")
        return RulesExplanation(admitted: true, lines: lines + self.afterAdmission(address, user: user, tls: tls))
    }

    private func afterAdmission(_ address: RuleAddress, user: String?, tls: Bool) -> [String] {
        var lines: [String] = []
        let group: String
        switch address {
        case .v4: group = "\(address)"
        case .v6: group = "its IPv6 prefix"
        }
        for limit in self.limits {
            let window = limit.window.map { Self.duration($0) } ?? ""
            let span = limit.window.map { Self.duration($0, spelled: true) } ?? ""
            switch (limit.kind, limit.key) {
            case (.connections, _):
                lines.append(
                    "  at most \(limit.count) connection(s) per \(window) from \(group), then -ERR [SYS/TEMP]   (\(limit.source))"
                )
            case (.sessions, _):
                lines.append(
                    "  at most \(limit.count) session(s) at once from \(group), then -ERR [SYS/TEMP]   (\(limit.source))"
                )
            case (.authFailures, .clientIP):
                lines.append(
                    "  after \(limit.count) failed login(s) in \(span) from \(group), its logins are refused for \(Self.duration(limit.block ?? 0, spelled: true))   (\(limit.source))"
                )
            case (.authFailures, .user):
                let who = user ?? "each user"
                lines.append(
                    "  after \(limit.count) failed login(s) in \(span) as \(who), logins as \(who) are refused for \(Self.duration(limit.block ?? 0, spelled: true))   (\(limit.source))"
                )
            }
        }
        if !self.tlsBefore.isEmpty {
            let commands = self.tlsBefore.sorted().joined(separator: ", ")
            lines.append(
                tls
                    ? "  TLS is in place, so \"require tls before \(commands)\" does not stop it"
                    : "  without TLS, \(commands) are refused: the client must send STLS or use the TLS port"
            )
        }
        let state = RulesState(self)
        if let user {
            if let line = state.userDenied(user) {
                lines.append("  user \(user) is refused at login, before the upstream sees it   (\(line))")
            }
            for denial in self.commandDenials {
                guard let pattern = denial.user, RulesState.matches(user, pattern) else { continue }
                lines.append("  \(denial.command) is refused for \(user)   (\(denial.source))")
            }
        }
        for denial in self.commandDenials where denial.user == nil {
            lines.append("  \(denial.command) is refused for everyone   (\(denial.source))")
        }
        return lines
    }

    /// `minute` (after per), or `1 minute` (after in and for, `spelled`), `10 minutes`.
    static func duration(_ seconds: Double, spelled: Bool = false) -> String {
        let units: [(Double, String)] = [(86_400, "day"), (3600, "hour"), (60, "minute"), (1, "second")]
        for (size, name) in units where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
            let count = Int(seconds / size)
            return count == 1 ? (spelled ? "1 \(name)" : name) : "\(count) \(name)s"
        }
        return "\(seconds) seconds"
    }
}
