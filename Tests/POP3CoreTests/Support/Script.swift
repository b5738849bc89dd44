import NIOCore
import POP3Core
import Testing

/// A session written out as what each side sent, in order.
struct Script: Sendable, CustomTestStringConvertible {
    enum Step: Sendable {
        case client(String)
        case server(String)
        case clientClose
        case serverClose
    }

    var name: String
    var steps: [Step]
    var configuration = ConversationMachine.Configuration()

    init(_ name: String, configuration: ConversationMachine.Configuration = .init(), _ steps: [Step]) {
        self.name = name
        self.steps = steps
        self.configuration = configuration
    }

    var testDescription: String { self.name }

    /// Feeds every step whole, or one byte at a time.
    func run(byteByByte: Bool = false) -> [ConversationEvent] {
        var machine = ConversationMachine(configuration: self.configuration)
        var events: [ConversationEvent] = []
        for step in self.steps {
            switch step {
            case .client(let text), .server(let text):
                let bytes = Array(text.utf8)
                let pieces: [[UInt8]] = byteByByte ? bytes.map { [$0] } : [bytes]
                for piece in pieces {
                    let buffer = ByteBuffer(bytes: piece)
                    if case .client = step {
                        machine.clientSent(buffer, into: &events)
                    } else {
                        machine.serverSent(buffer, into: &events)
                    }
                }
            case .clientClose:
                events += machine.clientClosed()
            case .serverClose:
                events += machine.serverClosed()
            }
        }
        return events
    }

    /// Runs the script and returns the final machine too.
    func machine() -> ConversationMachine {
        var machine = ConversationMachine(configuration: self.configuration)
        for step in self.steps {
            switch step {
            case .client(let text): _ = machine.clientSent(ByteBuffer(string: text))
            case .server(let text): _ = machine.serverSent(ByteBuffer(string: text))
            case .clientClose: _ = machine.clientClosed()
            case .serverClose: _ = machine.serverClosed()
            }
        }
        return machine
    }
}

extension Array where Element == ConversationEvent {
    /// Merges adjacent body chunks and opaque counts, whose boundaries follow the input's chunking.
    var coalesced: [ConversationEvent] {
        var out: [ConversationEvent] = []
        for event in self {
            switch (out.last, event) {
            case (.bodyChunk(var a)?, .bodyChunk(var b)):
                a.writeBuffer(&b)
                out[out.count - 1] = .bodyChunk(a)
            case (.opaque(let s1, let n1)?, .opaque(let s2, let n2)) where s1 == s2:
                out[out.count - 1] = .opaque(s1, octets: n1 + n2)
            default:
                out.append(event)
            }
        }
        return out
    }

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
