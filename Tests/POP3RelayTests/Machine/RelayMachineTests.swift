import NIOCore
import POP3Core
import Testing

@testable import POP3Relay

/// Drives a ``RelayMachine`` without sockets: events in, actions out, time as a parameter.
struct Harness {
    var machine: RelayMachine
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    /// Every action so far, and the anomalies recorded.
    var all: [RelayMachine.Action] = []

    init(adjust: (inout RelayMachine.Settings) -> Void = { _ in }) {
        var settings = RelayMachine.Settings(upstream: "up:110")
        settings.annotate = false
        adjust(&settings)
        self.machine = RelayMachine(settings: settings, now: self.now, wallClock: 1_800_000_000)
    }

    /// Runs one event and returns its actions as short lines: `client ← +OK…`, `close upstream`, …
    @discardableResult
    mutating func run(_ event: (inout RelayMachine, NIODeadline, inout [RelayMachine.Action]) -> Void) -> [String] {
        var actions: [RelayMachine.Action] = []
        event(&self.machine, self.now, &actions)
        self.all += actions
        return actions.compactMap(Self.describe)
    }

    static func describe(_ action: RelayMachine.Action) -> String? {
        switch action {
        case .admit: "admit"
        case .connectUpstream: "connect"
        case .write(let side, let bytes): "\(side) ← \(String(buffer: bytes))"
        case .close(let side): "close \(side)"
        case .ended(let how): "ended: \(how.rawValue)"
        case .startTLS: "start TLS"
        case .refuseHandshake: "refuse handshake"
        case .startUpstreamTLS: "start upstream TLS"
        case .identified(let client, let via):
            "identified \(client?.description ?? "-") via \(via.map { "\($0)" } ?? "-")"
        case .beginClientTLS(let leftover): "begin TLS with \(leftover.readableBytes) octets"
        case .flush, .arm, .resumeReading, .record, .export, .log: nil
        }
    }

    /// A session admitted and connected, with the upstream's greeting relayed.
    static func relaying(
        greeting: String = "+OK ready\r\n",
        adjust: (inout RelayMachine.Settings) -> Void = { _ in }
    ) -> Harness {
        var h = Harness(adjust: adjust)
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        h.upstream(greeting)
        return h
    }

    @discardableResult
    mutating func client(_ text: String) -> [String] {
        self.run { $0.clientRead(ByteBuffer(string: text), now: $1, into: &$2) }
    }

    @discardableResult
    mutating func upstream(_ text: String) -> [String] {
        self.run { $0.upstreamRead(ByteBuffer(string: text), now: $1, into: &$2) }
    }

    mutating func advance(_ amount: TimeAmount) -> [String] {
        self.now = self.now + amount
        return self.run { $0.deadlineReached(now: $1, into: &$2) }
    }

    /// The earliest deadline armed so far.
    var armed: [NIODeadline] { self.all.compactMap { if case .arm(let d) = $0 { d } else { nil } } }

    var anomalies: [Anomaly] {
        self.all.flatMap { action -> [Anomaly] in
            guard case .record(let events) = action else { return [] }
            return events.compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        }
    }

    var written: String {
        self.all.compactMap { if case .write(let side, let b) = $0 { "\(side) ← \(String(buffer: b))" } else { nil } }
            .joined()
    }

    /// Everything written to the client, as one text.
    var toClient: String {
        self.all.compactMap { if case .write(.client, let b) = $0 { String(buffer: b) } else { nil } }.joined()
    }

    var upstreamWrites: [String] {
        self.all.compactMap { if case .write(.upstream, let b) = $0 { String(buffer: b) } else { nil } }
    }
}

@Suite("Relay machine")
struct RelayMachineTests {
    @Test("a connection is admitted before the upstream is dialled, and the greeting is relayed as it came")
    func greeting() {
        var h = Harness()
        #expect(h.run { $0.clientConnected(now: $1, into: &$2) } == ["admit"])
        #expect(h.run { $0.admitted(.admit, now: $1, into: &$2) } == ["connect"])
        #expect(h.run { $0.upstreamConnected(now: $1, into: &$2) } == [])
        #expect(h.upstream("+OK ready\r\n") == ["client ← +OK ready\r\n"])
    }

    @Test("a refused client gets -ERR [SYS/PERM] and no upstream connection")
    func refused() {
        var h = Harness()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        #expect(
            h.run { $0.admitted(.refuse(reason: "not from here"), now: $1, into: &$2) } == [
                "client ← -ERR [SYS/PERM] not from here\r\n", "close client",
            ]
        )
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.refused.rawValue)"])
    }

    @Test("pipelined USER, an over-long line and PASS: +OK, the gateway's -ERR, +OK, in the order of the commands")
    func pipelineWithOverlongLine() {
        var h = Harness.relaying()
        let long = "NOOP " + String(repeating: "x", count: 300)
        #expect(h.client("USER a\r\n\(long)\r\nPASS b\r\n") == ["upstream ← USER a\r\n", "upstream ← PASS b\r\n"])
        #expect(
            h.upstream("+OK\r\n+OK\r\n") == [
                "client ← +OK\r\n",
                "client ← -ERR line of 307 octets is too long; the limit is 255 (RFC 2449 section 4)\r\n",
                "client ← +OK\r\n",
            ]
        )
    }

    @Test("a malformed line in the middle is answered in its turn, and its neighbours go upstream")
    func refusalInTheMiddle() {
        var h = Harness.relaying()
        #expect(h.client("STAT\r\nX\u{1}Y\r\nNOOP\r\n") == ["upstream ← STAT\r\n", "upstream ← NOOP\r\n"])
        #expect(
            h.upstream("+OK 0 0\r\n") == [
                "client ← +OK 0 0\r\n",
                "client ← -ERR control characters are not allowed in a command (RFC 1939 section 3)\r\n",
            ]
        )
        #expect(h.upstream("+OK\r\n") == ["client ← +OK\r\n"])
    }

    @Test("STLS is a barrier: what follows waits, and after +OK it is dropped (CVE-2011-0411), then bytes pass raw")
    func stlsBarrier() {
        var h = Harness.relaying()
        #expect(h.client("STLS\r\nUSER injected\r\n") == ["upstream ← STLS\r\n"])
        #expect(h.upstream("+OK go ahead\r\n") == ["client ← +OK go ahead\r\n"])
        #expect(h.anomalies.contains { $0.rule == .stls && $0.side == .client })
        // The TLS handshake passes unread; the injected line never went upstream.
        #expect(h.client("\u{16}\u{3}\u{1}hello") == ["upstream ← \u{16}\u{3}\u{1}hello"])
        #expect(!h.upstreamWrites.contains { $0.contains("injected") })
    }

    @Test("STLS refused: the lines behind it are commands after all, and go upstream")
    func stlsRefused() {
        var h = Harness.relaying()
        #expect(h.client("STLS\r\nCAPA\r\n") == ["upstream ← STLS\r\n"])
        #expect(h.upstream("-ERR no TLS here\r\n") == ["client ← -ERR no TLS here\r\n", "upstream ← CAPA\r\n"])
    }

    @Test(
        "a client that vanishes closes the upstream without QUIT, in every state",
        arguments: ["connecting", "greeting", "login", "transaction with DELE marks", "tunnel"]
    )
    func vanished(_ where: String) {
        var h = Harness()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        if `where` != "connecting" { h.run { $0.upstreamConnected(now: $1, into: &$2) } }
        switch `where` {
        case "login":
            h.upstream("+OK\r\n")
            h.client("USER a\r\n")
        case "transaction with DELE marks":
            h.upstream("+OK\r\n")
            h.client("USER a\r\nPASS b\r\nDELE 1\r\n")
            h.upstream("+OK\r\n+OK\r\n+OK\r\n")
        case "tunnel":
            h.upstream("+OK\r\n")
            h.client("STLS\r\n")
            h.upstream("+OK\r\n")
        default:
            break
        }
        let closing = h.run { $0.clientClosed(now: $1, into: &$2) }
        if `where` == "connecting" {
            #expect(closing == [])
            // The connection being made is closed as soon as it is made, and only then does the session end.
            #expect(h.run { $0.upstreamConnected(now: $1, into: &$2) } == ["close upstream"])
        } else {
            #expect(closing == ["close upstream"])
        }
        // Inside TLS passed through, whether QUIT was sent cannot be seen: the end says so.
        let end = `where` == "tunnel" ? SessionEnd.insideTLS : .clientVanished
        #expect(h.run { $0.upstreamClosed(now: $1, into: &$2) } == ["ended: \(end.rawValue)"])
        #expect(!h.upstreamWrites.contains { $0.uppercased().hasPrefix("QUIT") })
    }

    @Test("a client that leaves after QUIT: the upstream gets the quit-reply time to answer, then is closed")
    func quitDeadline() {
        var h = Harness.relaying { $0.quitReplyTimeout = .seconds(5) }
        #expect(h.client("QUIT\r\n") == ["upstream ← QUIT\r\n"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == [])
        #expect(h.advance(.seconds(4)) == [])
        #expect(h.advance(.seconds(1)) == ["close upstream"])
        #expect(h.run { $0.upstreamClosed(now: $1, into: &$2) } == ["ended: the client quit"])
    }

    @Test("an upstream that never greets: -ERR [SYS/TEMP] after the greeting timeout, both sides closed")
    func greetingTimeout() {
        var h = Harness { $0.greetingTimeout = .seconds(30) }
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        #expect(h.armed.last == h.now + .seconds(30))
        #expect(h.advance(.seconds(29)) == [])
        #expect(
            h.advance(.seconds(1)) == [
                "client ← -ERR [SYS/TEMP] upstream up:110 did not greet in time\r\n", "close client", "close upstream",
            ]
        )
    }

    @Test("a greeting that drips in and misses its deadline: the client gets a clean -ERR line, no part of it")
    func drippingGreeting() {
        var h = Harness { $0.greetingTimeout = .seconds(30) }
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        #expect(h.upstream("+OK d") == [])
        #expect(h.upstream("r") == [])
        #expect(h.advance(.seconds(31)).first == "client ← -ERR [SYS/TEMP] upstream up:110 did not greet in time\r\n")
        #expect(!h.written.contains("+OK"))
    }

    @Test("an upstream that cannot be reached: -ERR [SYS/TEMP] … is unreachable, and the client is closed")
    func connectFailure() {
        var h = Harness()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        #expect(
            h.run { $0.upstreamConnectFailed("refused", now: $1, into: &$2) } == [
                "client ← -ERR [SYS/TEMP] upstream up:110 is unreachable\r\n", "close client",
            ]
        )
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: the upstream was unreachable"])
    }

    @Test("backpressure both ways: a side is not read while the other cannot take more, and resumes when it can")
    func backpressure() {
        var h = Harness.relaying()
        #expect(h.machine.mayRead(.client) && h.machine.mayRead(.upstream))
        h.run { $0.writabilityChanged(.upstream, writable: false, into: &$2) }
        #expect(!h.machine.mayRead(.client))
        var actions: [RelayMachine.Action] = []
        h.machine.writabilityChanged(.upstream, writable: true, into: &actions)
        #expect(actions.contains(.resumeReading(.client)))
        h.run { $0.writabilityChanged(.client, writable: false, into: &$2) }
        #expect(!h.machine.mayRead(.upstream))
        actions = []
        h.machine.writabilityChanged(.client, writable: true, into: &actions)
        #expect(actions.contains(.resumeReading(.upstream)))
    }

    @Test("what the client sends before the greeting counts against the backlog: reading stops, then resumes")
    func backlogBeforeGreeting() {
        var h = Harness()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        h.client(String(repeating: "NOOP\r\n", count: 12_000))
        #expect(!h.machine.mayRead(.client))
        var actions: [RelayMachine.Action] = []
        h.machine.upstreamRead(ByteBuffer(string: "+OK\r\n"), now: h.now, into: &actions)
        #expect(h.machine.mayRead(.client))
        #expect(actions.contains(.resumeReading(.client)))
    }

    @Test("a configured command-line limit reaches the conversation machine: a longer line is no R3, its +OK no R14")
    func configuredLineLimit() {
        var h = Harness.relaying { $0.commandLineLimit = 1000 }
        let line = "USER " + String(repeating: "abcd ", count: 60) + "x"
        #expect(h.client(line + "\r\n") == ["upstream ← \(line)\r\n"])
        h.upstream("+OK\r\n")
        #expect(!h.anomalies.contains { $0.rule == .commandLength || $0.rule == .errorRequired })
    }

    @Test("AUTH with a trailing space or a bad mechanism opens no SASL exchange: the next lines are commands")
    func authWithoutExchange() {
        for auth in ["AUTH ", "AUTH bad!mech"] {
            var h = Harness.relaying { $0.export = true }
            h.client("\(auth)\r\nX\u{1}\r\nNOOP\r\n")
            #expect(h.upstreamWrites == ["\(auth)\r\n", "NOOP\r\n"], "\(auth)")
            h.upstream("-ERR no\r\n+OK\r\n")
            #expect(
                h.written.hasSuffix(
                    "client ← -ERR no\r\nclient ← -ERR control characters are not allowed in a command (RFC 1939 section 3)\r\nclient ← +OK\r\n"
                ),
                "\(auth)"
            )
            let sasl = h.all.contains { if case .export(.clientLine(_, _, true)) = $0 { true } else { false } }
            #expect(!sasl, "\(auth)")
        }
    }

    @Test("a client that half-closes after its commands and QUIT, before the greeting: all go upstream, all answered")
    func halfCloseBeforeGreeting() {
        var h = Harness()
        h.run { $0.clientConnected(now: $1, into: &$2) }
        h.run { $0.admitted(.admit, now: $1, into: &$2) }
        #expect(h.client("USER a\r\nPASS b\r\nDELE 1\r\nQUIT\r\n") == [])
        #expect(h.run { $0.clientInputClosed(now: $1, into: &$2) } == [])
        h.run { $0.upstreamConnected(now: $1, into: &$2) }
        #expect(
            h.upstream("+OK hi\r\n") == [
                "client ← +OK hi\r\n", "upstream ← USER a\r\n", "upstream ← PASS b\r\n", "upstream ← DELE 1\r\n",
                "upstream ← QUIT\r\n",
            ]
        )
        // Said once, and the session is still read as POP3.
        #expect(h.anomalies.filter { $0.rule == .greeting }.count == 1)
        #expect(h.machine.conversation.state == .authorization)
        #expect(h.upstream("+OK\r\n+OK\r\n+OK\r\n+OK bye\r\n").count == 1)
        #expect(h.run { $0.upstreamClosed(now: $1, into: &$2) } == ["close client"])
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: the client quit"])
    }

    @Test("a half-closed client without QUIT: once its replies are written both sides close, no QUIT upstream")
    func halfCloseWithoutQuit() {
        var h = Harness.relaying()
        h.client("STAT\r\n")
        #expect(h.run { $0.clientInputClosed(now: $1, into: &$2) } == [])
        #expect(h.upstream("+OK 1 10\r\n") == ["client ← +OK 1 10\r\n", "close upstream", "close client"])
    }

    @Test("a QUIT behind a refused line goes upstream")
    func quitBehindRefusal() {
        var h = Harness.relaying()
        #expect(
            h.client("\u{1}\r\nQUIT\r\n") == [
                "client ← -ERR control characters are not allowed in a command (RFC 1939 section 3)\r\n",
                "upstream ← QUIT\r\n",
            ]
        )
    }

    @Test("an upstream called not POP3: the gateway's own -ERR for a later malformed line still comes at once")
    func notPOP3Upstream() {
        var h = Harness.relaying()
        h.upstream("junk one\r\njunk two\r\njunk three\r\njunk four\r\njunk five\r\n")
        #expect(h.machine.conversation.state == .notPOP3)
        #expect(
            h.client("NOOP\r\nX\u{1}\r\n") == [
                "upstream ← NOOP\r\n",
                "client ← -ERR control characters are not allowed in a command (RFC 1939 section 3)\r\n",
            ]
        )
    }

    @Test("a SASL response over 16 KiB: the exchange is cancelled upstream, and its -ERR answers the client")
    func overlongSASLResponse() {
        var h = Harness.relaying()
        h.client("AUTH PLAIN\r\n")
        h.upstream("+ \r\n")
        #expect(h.client(String(repeating: "A", count: 20_000) + "\r\n") == ["upstream ← *\r\n"])
        #expect(h.upstream("-ERR cancelled\r\n") == ["client ← -ERR cancelled\r\n"])
        #expect(h.anomalies.contains { $0.rule == .lengthCaps })
        #expect(!h.anomalies.contains { $0.rule == .errorRequired })
    }

    @Test("an upstream that dies with commands pending: each gets -ERR [SYS/TEMP] in order, the gateway's own too")
    func upstreamVanishes() {
        var h = Harness.relaying()
        h.client("STAT\r\n\u{1}\r\nNOOP\r\n")
        let actions = h.run { $0.upstreamClosed(now: $1, into: &$2) }
        #expect(
            actions == [
                "client ← -ERR [SYS/TEMP] upstream up:110 closed the connection\r\n",
                "client ← -ERR control characters are not allowed in a command (RFC 1939 section 3)\r\n",
                "client ← -ERR [SYS/TEMP] upstream up:110 closed the connection\r\n",
                "close client",
            ]
        )
        #expect(h.anomalies.contains { $0.rule == .unexpectedServerData && $0.side == .server })
    }

    @Test("a message body goes to the client as slices of what was read, one write per read")
    func bodyAsSlices() {
        var h = Harness.relaying()
        h.client("USER a\r\nPASS b\r\nRETR 1\r\n")
        h.upstream("+OK\r\n+OK\r\n")
        let body = "+OK 20 octets\r\nSubject: x\r\n\r\nhello\r\n.\r\n"
        #expect(h.upstream(body) == ["client ← \(body)"])
    }

    @Test("the idle timeout closes both sides without QUIT")
    func idle() {
        var h = Harness.relaying { $0.idleTimeout = .seconds(600) }
        h.client("USER a\r\nPASS b\r\n")
        h.upstream("+OK\r\n+OK\r\n")
        #expect(h.advance(.seconds(599)) == [])
        #expect(h.advance(.seconds(2)) == ["close upstream", "close client"])
    }

    @Test("a client that drips a command line is cut once the line has taken the line time, each octet notwithstanding")
    func drippingClient() {
        var h = Harness.relaying { $0.lineTimeout = .seconds(60) }
        h.client("US")
        #expect(h.advance(.seconds(30)) == [])
        h.client("E")
        #expect(h.advance(.seconds(29)) == [])
        h.client("R")
        #expect(
            h.advance(.seconds(1)) == [
                "client ← -ERR a command line must end within 60 seconds of its first octet\r\n", "close upstream",
                "close client",
            ]
        )
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.lineTimeout.rawValue)"])
        #expect(!h.upstreamWrites.contains { $0.hasPrefix("QUIT") || $0.hasPrefix("USER") })
        // The gateway's decision, not an early autologout by the server.
        #expect(!h.anomalies.contains { $0.rule == .autologout })
    }

    @Test("whole lines waiting behind STLS or a slow upstream are no dripping line")
    func waitingLinesAreNotDripping() {
        var h = Harness.relaying { $0.lineTimeout = .seconds(60) }
        h.client("STLS\r\nCAPA\r\n")
        #expect(h.advance(.seconds(61)) == [])
    }

    @Test("a client that does not finish its login in the login time is cut; one that did is not")
    func loginTimeout() {
        var h = Harness.relaying { $0.loginTimeout = .seconds(180) }
        h.client("USER a\r\n")
        h.upstream("+OK\r\n")
        #expect(
            h.advance(.seconds(180)) == [
                "client ← -ERR a login must finish within 180 seconds of connecting\r\n", "close upstream",
                "close client",
            ]
        )
        h.run { $0.upstreamClosed(now: $1, into: &$2) }
        #expect(h.run { $0.clientClosed(now: $1, into: &$2) } == ["ended: \(SessionEnd.loginTimeout.rawValue)"])
        #expect(!h.anomalies.contains { $0.rule == .autologout })

        var done = Harness.relaying { $0.loginTimeout = .seconds(180) }
        done.client("USER a\r\nPASS b\r\n")
        done.upstream("+OK\r\n+OK\r\n")
        #expect(done.advance(.seconds(200)) == [])
    }
}

@Suite("Relay machine: events nobody reads")
struct UnrecordedEventsTests {
    static let session: [(RelayMachine.Side, String)] = [
        (.client, "USER alice\r\nPASS secret\r\n"), (.upstream, "+OK\r\n"), (.upstream, "+OK in\r\n"),
        (.client, "STAT\r\nLIST\r\n"), (.upstream, "+OK 1 10\r\n+OK\r\n1 10\r\n.\r\n"), (.client, "QUIT\r\n"),
        (.upstream, "+OK bye\r\n"),
    ]

    /// Runs the session with a lent events array; each event's actions, and the array's room after each event.
    static func drive(recording: Bool) -> (actions: [[RelayMachine.Action]], rooms: [Int]) {
        var h = Harness.relaying { $0.recording = recording }
        var spare: [ConversationEvent] = []
        spare.reserveCapacity(8)
        var actions: [[RelayMachine.Action]] = []
        var rooms: [Int] = []
        for (side, text) in Self.session {
            var out: [RelayMachine.Action] = []
            h.machine.lendEvents(&spare)
            switch side {
            case .client: h.machine.clientRead(ByteBuffer(string: text), now: h.now, into: &out)
            case .upstream: h.machine.upstreamRead(ByteBuffer(string: text), now: h.now, into: &out)
            }
            h.machine.lendEvents(&spare)
            actions.append(out)
            rooms.append(spare.capacity)
        }
        return (actions, rooms)
    }

    @Test("without a reader: no record actions, every other action the same, the lent array back with its room")
    func unrecorded() {
        let recorded = Self.drive(recording: true)
        let unrecorded = Self.drive(recording: false)
        let records = recorded.actions.joined().filter { if case .record = $0 { true } else { false } }
        #expect(!records.isEmpty)
        #expect(!unrecorded.actions.joined().contains { if case .record = $0 { true } else { false } })
        let others = recorded.actions.map { $0.filter { if case .record = $0 { false } else { true } } }
        #expect(others == unrecorded.actions)
        // Nobody reads the events: each read used the lent array and gave it back, so none was allocated.
        #expect(unrecorded.rooms.allSatisfy { $0 >= 8 }, "\(unrecorded.rooms)")
        // Read, they leave with their record; the array lent is then gone to the reader.
        #expect(recorded.rooms.contains(0), "\(recorded.rooms)")
    }
}
