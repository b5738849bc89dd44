import Foundation
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

    @Test("one second is a second: \"idle for 1 second\"")
    func oneSecond() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        machine.serverSent(ByteBuffer(string: "+OK hi\r\n"), at: 10, into: &events)
        let notes = machine.serverClosed(at: 11.5).compactMap { if case .annotation(_, let t) = $0 { t } else { nil } }
        #expect(notes.contains { $0.hasSuffix("The session had been idle for 1 second.") }, "\(notes)")
    }

    @Test("excerpts show a tab as \\t, CR and LF as \\r and \\n, other controls as \\xNN")
    func controlCharacters() {
        #expect(CommandParser.printable("a\tb\rc\nd\u{1}e") == "a\\tb\\rc\\nd\\x1e")
        #expect(CommandParser.printable("plain") == "plain")
    }
}

/// Severities: each rule's default class is the README's, and findings of another kind say so.
@Suite("Conversation: severities")
struct SeverityTests {
    @Test("the README's table of classes is the code's, rule by rule")
    func readmeTable() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        for severity in Severity.allCases {
            let rules = Rule.allCases.filter { $0.defaultSeverity == severity }.map(\.id).joined(separator: ", ")
            #expect(
                text.split(separator: "\n").contains {
                    $0.hasPrefix("| \(severity.rawValue) |") && $0.hasSuffix("| \(rules) |")
                },
                "\(severity): \(rules)"
            )
        }
    }

    @Test("per finding: APOP's MD5 is security, its timestamp a violation; STLS out of state a violation")
    func perFinding() {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        machine.serverSent(ByteBuffer(string: "+OK hello <1.2@host>\r\n"), into: &events)
        machine.clientSent(ByteBuffer(string: "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n"), into: &events)
        let anomalies = events.compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        #expect(anomalies.contains { $0.rule == .apop && $0.severity == .security && $0.reason.contains("MD5") })
        var bad = ConversationMachine()
        var more: [ConversationEvent] = []
        bad.serverSent(ByteBuffer(string: "+OK hello <no-at-sign>\r\n"), into: &more)
        #expect(
            more.contains {
                if case .anomaly(let a) = $0 { a.rule == .apop && a.severity == .violation } else { false }
            }
        )
        #expect(Severity.note < .interop && Severity.interop < .violation && Severity.violation < .security)
        #expect(Anomaly(.stls, .client, "x").severity == .security)
        #expect(Anomaly(.stls, .client, "x", severity: .violation).severity == .violation)
    }

    @Test("the JSON record carries the class")
    func json() {
        var renderer = TranscriptRenderer(session: "1", format: .json)
        let lines = renderer.render(.anomaly(Anomaly(.cleartextLogin, .client, "clear")), time: 0)
        #expect(lines.first?.contains("\"severity\":\"security\"") == true)
    }
}
