import NIOCore
import Testing

@testable import POP3Core

/// Hostile and random input: the machine never crashes, never holds more than its limits, and reads the
/// same events in any chunking.
@Suite("Robustness")
struct RobustnessTests {
    /// A small deterministic generator, so a failure can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let tokens = [
        "+OK", "-ERR", "+ ", ".", "..", "\r\n", "\n", "\r", " ", "USER a", "PASS b", "RETR 1", "LIST", "UIDL",
        "CAPA", "STLS", "AUTH PLAIN", "TOP 1 0", "QUIT", "DELE 1", "[IN-USE]", "*", "\u{16}\u{03}", "é", "\0",
        String(repeating: "x", count: 300),
    ]

    static func soup(_ rng: inout SplitMix, count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for _ in 0..<count {
            if Int.random(in: 0..<4, using: &rng) == 0 {
                bytes.append(UInt8.random(in: 0...255, using: &rng))
            } else {
                bytes += Array(Self.tokens.randomElement(using: &rng)!.utf8)
            }
        }
        return bytes
    }

    @Test("random token soup on both sides: same events whole, in random chunks and byte by byte", arguments: 0..<40)
    func soup(_ seed: UInt64) {
        var rng = SplitMix(state: seed)
        var steps: [Script.Step] = [.server("+OK hello <1@x>\r\n")]
        for _ in 0..<12 {
            let text = String(decoding: Self.soup(&rng, count: 8), as: UTF8.self)
            steps.append(Bool.random(using: &rng) ? .client(text) : .server(text))
        }
        steps += [.clientClose, .serverClose]
        let script = Script("seed \(seed)", steps)
        let whole = script.run()
        #expect(whole.coalesced == script.run(byteByByte: true).coalesced)
    }

    /// fuzz-conversation's finding: a client whose first octet, 0x16, came alone was judged to speak TLS on it;
    /// whole, the same stream ("\u{16}\u{16}…") was a line. The second octet decides, however the stream is cut.
    @Test(
        "a first client octet 0x16 is judged with the octet after it, whole or byte by byte",
        arguments: [
            ("\u{16}\u{16}\u{16}bedded OP3\r\nCAPA\r\n", false),
            ("\u{16}\u{03}\u{01}\u{00}\u{05}", true),
            ("\u{16}", true),
        ]
    )
    func firstOctet(_ client: String, _ tls: Bool) {
        let script = Script("early \(client.debugDescription)", [.client(client), .clientClose, .serverClose])
        let whole = script.run()
        let single = script.run(byteByByte: true)
        #expect(whole.coalesced == single.coalesced)
        let judgedTLS = single.contains {
            if case .anomaly(let anomaly) = $0 { return anomaly.rule == .tlsPortMismatch }
            return false
        }
        #expect(judgedTLS == tls)
    }

    @Test("the gateway's cursor waits on a lone first octet 0x16 and reads the line once the next one comes")
    func firstOctetCursor() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        _ = machine.serverSent(ByteBuffer(string: "+OK ready\r\n"))
        var input = ByteBuffer(bytes: [0x16])
        guard case .needMoreData = machine.nextClientLine(from: &input, into: &events) else {
            Issue.record("a lone 0x16 was judged on its own")
            return
        }
        #expect(input.readableBytes == 1)
        input.writeString("\u{16}XY\r\n")
        guard case .line = machine.nextClientLine(from: &input, into: &events) else {
            Issue.record("no line")
            return
        }
        #expect(machine.state != .encrypted)
    }

    @Test("a flood without line endings keeps both framers within their limits")
    func flood() {
        var machine = ConversationMachine()
        _ = machine.serverSent(ByteBuffer(string: "+OK hi\r\n"))
        let chunk = ByteBuffer(repeating: 0x41, count: 1 << 20)
        for _ in 0..<32 {
            _ = machine.clientSent(chunk)
            _ = machine.serverSent(chunk)
        }
        #expect(machine.clientFramer.bufferedOctets <= POP3Defaults.commandLineLimit)
        #expect(machine.serverFramer.bufferedOctets <= POP3Defaults.replyLineLimit)
        let events = machine.clientSent(ByteBuffer(string: "\r\nNOOP\r\n"))
        #expect(events.anomalies.contains { $0.rule == .commandLength })
        #expect(events.commands.last?.verb == "NOOP")
    }

    @Test("a server that sends a huge body in one line is counted, not buffered")
    func hugeBodyLine() {
        var machine = ConversationMachine()
        _ = Script.login.map { step -> Void in
            switch step {
            case .client(let t): _ = machine.clientSent(ByteBuffer(string: t))
            case .server(let t): _ = machine.serverSent(ByteBuffer(string: t))
            default: break
            }
        }
        _ = machine.clientSent(ByteBuffer(string: "RETR 1\r\n"))
        _ = machine.serverSent(ByteBuffer(string: "+OK\r\n"))
        for _ in 0..<16 { _ = machine.serverSent(ByteBuffer(repeating: 0x42, count: 1 << 20)) }
        let end = machine.serverSent(ByteBuffer(string: "\r\n.\r\n"))
        #expect(end.bodies.first?.octets == 16 << 20 + 2)
        #expect(machine.serverFramer.bufferedOctets == 0)
        #expect(!machine.awaitingReply)
    }

    @Test("bodyChunks off: a body's octets are not handed over, and every other event is the same")
    func withoutBodyChunks() {
        func run(_ chunks: Bool) -> [ConversationEvent] {
            var configuration = ConversationMachine.Configuration()
            configuration.bodyChunks = chunks
            var machine = ConversationMachine(configuration: configuration)
            var events: [ConversationEvent] = []
            for step in Script.login {
                switch step {
                case .client(let t): events += machine.clientSent(ByteBuffer(string: t))
                case .server(let t): events += machine.serverSent(ByteBuffer(string: t))
                default: break
                }
            }
            events += machine.clientSent(ByteBuffer(string: "RETR 1\r\n"))
            events += machine.serverSent(ByteBuffer(string: "+OK\r\nSubject: x\r\n\r\nbody"))
            events += machine.serverSent(ByteBuffer(string: " text\r\n..dot\r\n.\r\n"))
            return events
        }
        let with = run(true)
        let without = run(false)
        func isChunk(_ event: ConversationEvent) -> Bool { if case .bodyChunk = event { true } else { false } }
        #expect(with.contains(where: isChunk))
        #expect(!without.contains(where: isChunk))
        #expect("\(with.filter { !isChunk($0) })" == "\(without)")
        #expect(without.bodies.first?.octets == with.bodies.first?.octets)
    }

    @Test("a peer that vanishes mid-reply leaves a truncated-reply anomaly and a closed session")
    func vanish() {
        let events = Script(
            "vanish",
            Script.login + [.client("RETR 1\r\n"), .server("+OK\r\nSubject: x\r\n\r\nhal"), .serverClose]
        ).run()
        #expect(events.anomalies.contains { $0.rule == .unexpectedServerData && $0.reason.contains("truncated") })
        #expect(events.bodies.last?.complete == false)
        #expect(events.states.last == .closed)
    }

    @Test("a command line limit near Int.max holds what follows STLS without overflowing, and keeps it bounded")
    func hugeLineLimitAfterSTLS() {
        for limit in [Int.max, Int.max / 4 + 1, 255] {
            var configuration = ConversationMachine.Configuration()
            configuration.commandLineLimit = limit
            var machine = ConversationMachine(configuration: configuration)
            var events: [ConversationEvent] = []
            machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), into: &events)
            machine.clientSent(ByteBuffer(string: "STLS\r\nUSER injected\r\n"), into: &events)
            machine.clientSent(ByteBuffer(repeating: 0x41, count: 4096), into: &events)
            machine.serverSent(ByteBuffer(string: "+OK begin\r\n"), into: &events)
            #expect(machine.state == .tlsNegotiation || machine.state == .encrypted, "\(limit)")
        }
    }
}
