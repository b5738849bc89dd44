import NIOConcurrencyHelpers
import NIOCore
import POP3Rules

/// The rules a gateway enforces and the counts behind them, shared by all its sessions behind one lock. The
/// decisions are ``RulesState``'s; this holds it, swaps in reloaded rules (keeping the counts whose lines
/// stayed), and counts what the rules did, for the log and the metrics.
public final class RulesGate: Sendable {
    /// What the rules did, as a metric counts it.
    public enum Event: String, Sendable, Hashable, CaseIterable {
        case deniedAddress = "denied-address"
        case connectionRate = "connection-rate"
        case concurrency
        case blockedLogin = "blocked-login"
        case deniedCommand = "denied-command"
        case deniedUser = "denied-user"
        case tlsRequired = "tls-required"
        case authFailure = "auth-failure"
        case blockStarted = "block-started"
    }

    private struct Locked {
        var state: RulesState
        var counts: [Event: Int] = [:]
        var snapshot: Snapshot
    }

    /// The rules in force as one shared value: a session keeps a reference to the ones it began under, not a
    /// copy of them.
    final class Snapshot: Sendable {
        let rules: Rules
        init(_ rules: Rules) { self.rules = rules }
    }

    private let locked: NIOLockedValueBox<Locked>
    /// Seconds on a steady clock; tests give their own.
    let clock: @Sendable () -> Double

    public init(
        _ rules: Rules,
        clock: @escaping @Sendable () -> Double = { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }
    ) {
        let state = RulesState(rules)
        self.locked = NIOLockedValueBox(Locked(state: state, snapshot: Snapshot(state.rules)))
        self.clock = clock
    }

    /// The rules in force: what a session that starts now keeps for its life.
    public var rules: Rules { self.locked.withLockedValue { $0.state.rules } }

    /// The same, shared.
    var snapshot: Snapshot { self.locked.withLockedValue { $0.snapshot } }

    /// New rules for the sessions from now on; counts and blocks of unchanged limit lines carry over.
    public func reload(_ rules: Rules) {
        self.locked.withLockedValue {
            $0.state = $0.state.reloaded(rules)
            $0.snapshot = Snapshot($0.state.rules)
        }
    }

    /// How often each thing happened since the gateway started.
    public var counts: [Event: Int] { self.locked.withLockedValue { $0.counts } }

    func count(_ event: Event) {
        self.locked.withLockedValue { $0.counts[event, default: 0] += 1 }
    }

    /// A new connection: the decision, and what it was counted in when admitted.
    func admit(_ address: RuleAddress) -> (decision: AdmissionDecision, ticket: RulesState.Ticket?) {
        let now = self.clock()
        return self.locked.withLockedValue { locked in
            switch locked.state.admit(address, now: now) {
            case .admit(let ticket):
                return (.admit, ticket)
            case .denied(let access):
                locked.counts[.deniedAddress, default: 0] += 1
                let refusal = AdmissionDecision.RuleRefusal(
                    reason: "connections from \(address) are not accepted here",
                    rule: "\(access.source)",
                    temporary: false,
                    silent: access.silent
                )
                return (.rule(refusal), nil)
            case .limited(let limit):
                let sessions = limit.kind == .sessions
                locked.counts[sessions ? .concurrency : .connectionRate, default: 0] += 1
                let reason =
                    sessions
                    ? "too many sessions at once from \(address); end one and try again"
                    : "too many connections from \(address); try again later"
                let refusal = AdmissionDecision.RuleRefusal(
                    reason: reason,
                    rule: "\(limit.source)",
                    temporary: true,
                    silent: false
                )
                return (.rule(refusal), nil)
            }
        }
    }

    func ended(_ ticket: RulesState.Ticket) {
        self.locked.withLockedValue { $0.state.sessionEnded(ticket) }
    }

    /// Whether this login is blocked: the limit, and the seconds left.
    func blocked(_ address: RuleAddress?, user: String?) -> (limit: Rules.Limit, seconds: Double)? {
        guard let address else { return nil }
        let now = self.clock()
        return self.locked.withLockedValue { locked in
            guard let (limit, until) = locked.state.blocked(address, user: user, now: now) else { return nil }
            locked.counts[.blockedLogin, default: 0] += 1
            return (limit, until - now)
        }
    }

    /// A failed login; returns the limit whose block this failure started.
    func authFailed(_ address: RuleAddress?, user: String?) -> Rules.Limit? {
        guard let address else { return nil }
        let now = self.clock()
        return self.locked.withLockedValue { locked in
            locked.counts[.authFailure, default: 0] += 1
            let limit = locked.state.authFailed(address, user: user, now: now)
            if limit != nil { locked.counts[.blockStarted, default: 0] += 1 }
            return limit
        }
    }
}

extension RuleAddress {
    /// The rules' view of a socket address (IPv4-mapped IPv6 as IPv4), read from the socket's own octets; nil
    /// for a Unix socket.
    init?(_ address: SocketAddress?) {
        switch address {
        case .v4(let v4): self = .v4(UInt32(bigEndian: v4.address.sin_addr.s_addr))
        case .v6(let v6):
            var octets = v6.address.sin6_addr
            self = withUnsafeBytes(of: &octets) { RuleAddress(v6Octets: $0) }
        default: return nil
        }
    }
}
