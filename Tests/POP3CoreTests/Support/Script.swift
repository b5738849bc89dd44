import NIOCore
import POP3Core
import Testing

/// A session written out as what each side sent, in order.
struct Script: Sendable, CustomTestStringConvertible {
    enum Step: Sendable {
        case client(String)
        case server(String)
        /// Octets that are not text (TLS records).
        case clientBytes([UInt8])
        case serverBytes([UInt8])
        case clientClose
        case serverClose
    }

    var name: String
    var steps: [Step]
    var configuration = ConversationMachine.Configuration()
    /// Steps after a gateway reports that TLS is up (``ConversationMachine/tlsEstablished()``).
    var tlsSteps: [Step]?
    /// When set, every step happens at time 0 and the server closes this many seconds later.
    var idleSeconds: Double?

    init(_ name: String, configuration: ConversationMachine.Configuration = .init(), _ steps: [Step]) {
        self.name = name
        self.steps = steps
        self.configuration = configuration
    }

    var testDescription: String { self.name }
    var hasTimes: Bool { self.idleSeconds != nil }

    /// Feeds every step whole, or one byte at a time.
    func run(byteByByte: Bool = false) -> [ConversationEvent] {
        var machine = ConversationMachine(configuration: self.configuration)
        return self.run(on: &machine, byteByByte: byteByByte)
    }

    /// Runs the script and returns the final machine.
    func machine() -> ConversationMachine {
        var machine = ConversationMachine(configuration: self.configuration)
        _ = self.run(on: &machine, byteByByte: false)
        return machine
    }

    private func run(on machine: inout ConversationMachine, byteByByte: Bool) -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        let time: Double? = self.idleSeconds == nil ? nil : 0
        func feed(_ steps: [Step]) {
            for step in steps {
                switch step {
                case .client, .server, .clientBytes, .serverBytes:
                    let bytes: [UInt8]
                    let fromClient: Bool
                    switch step {
                    case .client(let text): (bytes, fromClient) = (Array(text.utf8), true)
                    case .server(let text): (bytes, fromClient) = (Array(text.utf8), false)
                    case .clientBytes(let octets): (bytes, fromClient) = (octets, true)
                    case .serverBytes(let octets): (bytes, fromClient) = (octets, false)
                    default: continue
                    }
                    let pieces: [[UInt8]] = byteByByte ? bytes.map { [$0] } : [bytes]
                    for piece in pieces {
                        if fromClient {
                            machine.clientSent(ByteBuffer(bytes: piece), at: time, into: &events)
                        } else {
                            machine.serverSent(ByteBuffer(bytes: piece), at: time, into: &events)
                        }
                    }
                case .clientClose:
                    events += machine.clientClosed(at: time)
                case .serverClose:
                    events += machine.serverClosed(at: time)
                }
            }
        }
        feed(self.steps)
        if let more = self.tlsSteps {
            events += machine.tlsEstablished()
            feed(more)
        }
        if let idle = self.idleSeconds {
            events += machine.serverClosed(at: idle)
        }
        return events
    }
}

extension Array where Element == ConversationEvent {
    /// Merges adjacent body chunks and opaque counts, whose boundaries follow the input's chunking.
    var coalesced: [ConversationEvent] { self.mergingChunks() }

    var anomalies: [Anomaly] {
        self.compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
    }

    var rules: Set<Rule> { Set(self.anomalies.map(\.rule)) }

    var commands: [CommandEvent] {
        self.compactMap { if case .command(let c) = $0 { c } else { nil } }
    }

    var replies: [ReplyEvent] {
        self.compactMap { if case .reply(let r) = $0 { r } else { nil } }
    }

    var states: [ConversationState] {
        self.compactMap { if case .stateChanged(let s, _) = $0 { s } else { nil } }
    }

    var bodies: [BodySummary] {
        self.compactMap { if case .bodyEnd(let b) = $0 { b } else { nil } }
    }

    /// Every text a transcript would show, in one string, to look for leaks.
    var allText: String {
        var renderer = TranscriptRenderer(session: "t", format: .json, showBodies: false)
        var text = self.flatMap { renderer.render($0, time: 0) }.joined(separator: "\n")
        var plain = TranscriptRenderer(session: "t", format: .text)
        text += self.flatMap { plain.render($0, time: 0) }.joined(separator: "\n")
        return text
    }
}

extension Script {
    /// A greeting and a USER/PASS login, the usual start of a script.
    static let login: [Step] = [
        .server("+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
        .client("USER mrose\r\n"),
        .server("+OK\r\n"),
        .client("PASS tanstaaf\r\n"),
        .server("+OK maildrop locked\r\n"),
    ]
}
