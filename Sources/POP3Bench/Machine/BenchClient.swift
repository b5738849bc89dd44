import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// One load-generating POP3 session, as a pure machine: replies in, actions out. It sends its script one
/// command at a time (as mainstream clients do), reads each status line and, where the command has one, the
/// multi-line body to its terminating dot, and reports how the session went. No channels, no clock: times come in.
public struct BenchClient: Sendable {
    /// What one session does.
    public struct Script: Sendable, Hashable {
        public var user: String
        public var password: String
        /// STLS before the login, then TLS.
        public var starttls = false
        /// After the login, each of these in turn (their replies multi-line when `multiline`).
        public var commands: [Command] = [.stat, .list]
        /// `retr`: RETR of this message again and again until the runner says stop.
        public var repeatRetr: Int?
        /// `idle`: after the login, wait for the runner's word, then these.
        public var holdAfterLogin = false

        public init(user: String, password: String) {
            self.user = user
            self.password = password
        }
    }

    public enum Command: Sendable, Hashable {
        case stat, list, noop, uidl
        case retr(Int)

        var line: String {
            switch self {
            case .stat: "STAT"
            case .list: "LIST"
            case .noop: "NOOP"
            case .uidl: "UIDL"
            case .retr(let n): "RETR \(n)"
            }
        }

        var multiline: Bool {
            switch self {
            case .list, .uidl, .retr: true
            case .stat, .noop: false
            }
        }
    }

    public enum Action: Sendable, Hashable {
        case send(String)
        case startTLS
        /// The login is done and the script says hold: the runner calls ``release(now:)`` when it is time.
        case holding
        /// A command's reply came in full: how long it took, in nanoseconds, and its octets.
        case replied(verb: String, nanoseconds: Int64, octets: Int)
        /// The session is over: the connection can close.
        case finished(Outcome)
    }

    public enum Outcome: Sendable, Hashable {
        case completed
        case failed(String)
    }

    private enum Step: Sendable, Hashable {
        case greeting, stls, user, pass
        case command(Int)
        case retr(Int)
        case quit
    }

    private enum State: Sendable, Hashable {
        case connecting
        /// Waiting for the reply to `step`, sent at `since`; in a body once its status line was +OK.
        case waiting(Step, since: Int64, body: Bool, octets: Int)
        case handshaking
        case holding
        case done
    }

    public let script: Script
    private var state = State.connecting
    /// Reply octets not yet read as a whole line.
    private var input = ByteBuffer()
    /// In a body, the last octet taken was not a line's end: the next line start is after the next LF.
    private var midLine = false
    /// `retr`: whether to ask for the message once more.
    private var more: @Sendable () -> Bool

    public init(script: Script, more: @escaping @Sendable () -> Bool = { false }) {
        self.script = script
        self.more = more
    }

    public mutating func connected(now: Int64) -> [Action] {
        guard case .connecting = self.state else { return [] }
        self.state = .waiting(.greeting, since: now, body: false, octets: 0)
        return []
    }

    public mutating func tlsEstablished(now: Int64) -> [Action] {
        guard case .handshaking = self.state else { return [] }
        return self.send(.user, now: now)
    }

    /// The runner's word to a holding session: go on with the rest of the script.
    public mutating func release(now: Int64) -> [Action] {
        guard case .holding = self.state else { return [] }
        return self.afterLogin(now: now)
    }

    public mutating func closed() -> [Action] {
        switch self.state {
        case .done: return []
        case .waiting(.quit, _, _, _):
            // A server may close right after +OK to QUIT arrives with the close.
            self.state = .done
            return [.finished(.completed)]
        default:
            self.state = .done
            return [.finished(.failed("closed by the server before the script ended"))]
        }
    }

    public mutating func received(_ bytes: inout ByteBuffer, now: Int64) -> [Action] {
        self.input.writeBuffer(&bytes)
        var actions: [Action] = []
        while case .waiting(let step, let since, let body, var octets) = self.state {
            if body {
                // Bodies are scanned, not split into lines: a RETR of megabytes costs a memchr per line.
                let (taken, ended) = self.scanBody()
                octets += taken
                if ended {
                    actions += self.replied(step, since: since, octets: octets, now: now)
                    continue
                }
                self.state = .waiting(step, since: since, body: true, octets: octets)
                break
            }
            guard let line = self.nextLine() else { break }
            octets += line.count + 2
            guard line.starts(with: Array("+OK".utf8)) else {
                let text = String(decoding: line.prefix(80), as: UTF8.self)
                let what =
                    line.starts(with: Array("-ERR".utf8))
                    ? "\(self.name(step)) refused: \(text)" : "\(self.name(step)): not a POP3 reply: \(text)"
                self.state = .done
                actions.append(.finished(.failed(what)))
                break
            }
            if self.multiline(step) {
                self.midLine = false
                self.state = .waiting(step, since: since, body: true, octets: octets)
            } else {
                actions += self.replied(step, since: since, octets: octets, now: now)
            }
        }
        if case .done = self.state { self.input.clear() }
        // What was read is let go: one long session must not keep every octet it received.
        if self.input.readableBytes == 0 {
            self.input.clear()
        } else if self.input.readerIndex > 65_536 {
            self.input.discardReadBytes()
        }
        return actions
    }

    /// Takes body octets up to and including the terminating dot line, or all there is; returns the octets
    /// taken and whether the body ended. A dot line split across reads is left for the next read.
    private mutating func scanBody() -> (Int, Bool) {
        var midLine = self.midLine
        let (taken, ended): (Int, Bool) = self.input.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress else { return (0, false) }
            let count = raw.count
            var index = 0
            while index < count {
                if !midLine, raw[index] == 0x2E {
                    guard index + 1 < count else { return (index, false) }
                    if raw[index + 1] == 0x0A { return (index + 2, true) }
                    if raw[index + 1] == 0x0D {
                        guard index + 2 < count else { return (index, false) }
                        if raw[index + 2] == 0x0A { return (index + 3, true) }
                    }
                }
                guard let found = memchr(base + index, 0x0A, count - index) else {
                    midLine = true
                    return (count, false)
                }
                index = base.distance(to: UnsafeRawPointer(found)) + 1
                midLine = false
            }
            return (count, false)
        }
        self.midLine = midLine
        self.input.moveReaderIndex(forwardBy: taken)
        return (taken, ended)
    }

    // MARK: - Inside

    private mutating func nextLine() -> [UInt8]? {
        guard let end = self.input.readableBytesView.firstIndex(of: 0x0A) else {
            // A line that never ends is not POP3; a bound keeps a broken server from filling memory.
            if self.input.readableBytes > 65_536 { self.input.clear() }
            return nil
        }
        let length = end - self.input.readerIndex
        var line = self.input.readBytes(length: length + 1) ?? []
        line.removeLast()
        if line.last == 0x0D { line.removeLast() }
        return line
    }

    private mutating func replied(_ step: Step, since: Int64, octets: Int, now: Int64) -> [Action] {
        var actions: [Action] = []
        if step != .greeting {
            actions.append(.replied(verb: self.name(step), nanoseconds: now - since, octets: octets))
        }
        switch step {
        case .quit:
            self.state = .done
            actions.append(.finished(.completed))
        case .stls:
            self.state = .handshaking
            actions.append(.startTLS)
        default:
            actions += self.next(after: step, now: now)
        }
        return actions
    }

    private mutating func next(after step: Step, now: Int64) -> [Action] {
        switch step {
        case .greeting:
            return self.send(self.script.starttls ? .stls : .user, now: now)
        case .stls:
            return self.send(.user, now: now)
        case .user:
            return self.send(.pass, now: now)
        case .pass:
            if self.script.holdAfterLogin {
                self.state = .holding
                return [.holding]
            }
            return self.afterLogin(now: now)
        case .command(let index):
            return self.send(index + 1 < self.script.commands.count ? .command(index + 1) : .quit, now: now)
        case .retr(let n):
            return self.send(self.more() ? .retr(n) : .quit, now: now)
        case .quit:
            return []
        }
    }

    private mutating func afterLogin(now: Int64) -> [Action] {
        if let retr = self.script.repeatRetr { return self.send(.retr(retr), now: now) }
        return self.send(self.script.commands.isEmpty ? .quit : .command(0), now: now)
    }

    private mutating func send(_ step: Step, now: Int64) -> [Action] {
        self.state = .waiting(step, since: now, body: false, octets: 0)
        let line: String =
            switch step {
            case .greeting: ""
            case .stls: "STLS"
            case .user: "USER \(self.script.user)"
            case .pass: "PASS \(self.script.password)"
            case .command(let index): self.script.commands[index].line
            case .retr(let n): "RETR \(n)"
            case .quit: "QUIT"
            }
        return [.send(line + "\r\n")]
    }

    private func name(_ step: Step) -> String {
        switch step {
        case .greeting: "greeting"
        case .stls: "STLS"
        case .user: "USER"
        case .pass: "PASS"
        case .command(let index): String(self.script.commands[index].line.prefix { $0 != " " })
        case .retr: "RETR"
        case .quit: "QUIT"
        }
    }

    private func multiline(_ step: Step) -> Bool {
        switch step {
        case .command(let index): self.script.commands[index].multiline
        case .retr: true
        default: false
        }
    }
}
