import NIOCore
import Testing

@testable import POP3Core

/// Where and how findings are shown: under the line they are about, with control characters readable.
@Suite("Conversation: how findings are shown")
struct ReportingTests {
    @Test("an anomaly about the greeting comes after the greeting, not before it")
    func greetingFindingAfterGreeting() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        machine.serverSent(ByteBuffer(string: "+OK [SYS/TEMP] hello <1234>\r\n"), into: &events)
        let kinds = events.map { event -> String in
            switch event {
            case .reply: "reply"
            case .anomaly(let a): a.rule.id
            case .stateChanged: "state"
            default: "other"
            }
        }
        let reply = kinds.firstIndex(of: "reply")
        #expect(reply != nil)
        #expect(kinds.contains("R26") && kinds.contains("R45"), "\(kinds)")
        for (index, kind) in kinds.enumerated() where kind.hasPrefix("R") { #expect(index > reply!, "\(kinds)") }
    }

    @Test("excerpts show a tab as \\t, CR and LF as \\r and \\n, other controls as \\xNN")
    func controlCharacters() {
        #expect(CommandParser.printable("a\tb\rc\nd\u{1}e") == "a\\tb\\rc\\nd\\x1e")
        #expect(CommandParser.printable("plain") == "plain")
    }
}
