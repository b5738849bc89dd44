import NIOCore
import Testing

@testable import POP3Core

/// The example exchanges of RFC 1939, replayed through the machine.
@Suite("RFC 1939 examples")
struct RFC1939ExampleTests {
    /// A message of exactly `octets` octets with CRLF line endings.
    static func message(_ octets: Int, tag: String) -> String {
        var text = "Subject: \(tag)\r\n\r\n"
        while text.utf8.count + 12 <= octets { text += "0123456789\r\n" }
        let missing = octets - text.utf8.count
        if missing >= 2 { text += String(repeating: "x", count: missing - 2) + "\r\n" }
        return text
    }

    /// RFC 1939 §10, "Example POP3 Session".
    static let section10 = Script(
        "RFC 1939 §10",
        [
            .server("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
            .client("APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"),
            .server("+OK mrose's maildrop has 2 messages (320 octets)\r\n"),
            .client("STAT\r\n"),
            .server("+OK 2 320\r\n"),
            .client("LIST\r\n"),
            .server("+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"),
            .client("RETR 1\r\n"),
            .server("+OK 120 octets\r\n" + message(120, tag: "one") + ".\r\n"),
            .client("DELE 1\r\n"),
            .server("+OK message 1 deleted\r\n"),
            .client("RETR 2\r\n"),
            .server("+OK 200 octets\r\n" + message(200, tag: "two") + ".\r\n"),
            .client("DELE 2\r\n"),
            .server("+OK message 2 deleted\r\n"),
            .client("QUIT\r\n"),
            .server("+OK dewey POP3 server signing off (maildrop empty)\r\n"),
            .clientClose,
            .serverClose,
        ]
    )

    @Test(
        "the §10 session reads as APOP login, STAT, LIST, two RETR/DELE pairs and QUIT, with no anomaly but APOP's weakness"
    )
    func section10Session() {
        let events = Self.section10.run()
        #expect(events.commands.map(\.verb) == ["APOP", "STAT", "LIST", "RETR", "DELE", "RETR", "DELE", "QUIT"])
        #expect(events.replies.count == 9)
        #expect(events.states == [.authorization, .transaction, .update, .closed])
        #expect(events.anomalies.map(\.rule) == [.apop])
        #expect(events.bodies.map(\.inResponseTo) == ["LIST", "RETR", "RETR"])
        let machine = Self.section10.machine()
        #expect(machine.maildrop.count == 2 && machine.maildrop.octets == 320)
        #expect(machine.maildrop.sizes == [1: 120, 2: 200])
        #expect(machine.maildrop.deleted == [1, 2])
    }

    @Test("every command and reply of §10 carries a note with its RFC section")
    func annotated() {
        let events = Self.section10.run()
        for command in events.commands { #expect(command.note.contains("RFC 1939 §"), "\(command.verb)") }
        for reply in events.replies { #expect(reply.note.contains("(RFC "), "\(reply.text)") }
        let dele = events.commands.first { $0.verb == "DELE" }
        #expect(dele?.note.contains("nothing is removed until the session ends with QUIT") == true)
        #expect(events.allText.contains("c4c9334bac560ecc979e58001b3e22fb") == false)
    }

    @Test(
        "feeding the examples byte by byte gives the same events",
        arguments: [section10, sections5and7, userPassScript]
    )
    func byteByByte(_ script: Script) {
        #expect(script.run().coalesced == script.run(byteByByte: true).coalesced)
    }

    static let sections5and7 = Script(
        "RFC 1939 §5/§7",
        Script.login + [
            .client("LIST 2\r\n"), .server("+OK 2 200\r\n"),
            .client("LIST 3\r\n"), .server("-ERR no such message, only 2 messages in maildrop\r\n"),
            .client("NOOP\r\n"), .server("+OK\r\n"),
            .client("DELE 1\r\n"), .server("+OK message 1 deleted\r\n"),
            .client("DELE 2\r\n"), .server("-ERR message 2 already deleted\r\n"),
            .client("RSET\r\n"), .server("+OK maildrop has 2 messages (320 octets)\r\n"),
            .client("TOP 1 10\r\n"), .server("+OK\r\nSubject: a\r\n\r\nline\r\n.\r\n"),
            .client("TOP 100 3\r\n"), .server("-ERR no such message\r\n"),
            .client("UIDL\r\n"), .server("+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"),
            .client("UIDL 2\r\n"), .server("+OK 2 QhdPYR:00WBw1Ph7x7\r\n"),
            .client("UIDL 3\r\n"), .server("-ERR no such message, only 2 messages in maildrop\r\n"),
            .client("QUIT\r\n"), .server("+OK dewey POP3 server signing off\r\n"),
        ]
    )

    @Test("RFC 1939 §5 and §7 examples: each reply is read in the right form")
    func commandExamples() {
        let script = Self.sections5and7
        let events = script.run()
        #expect(events.anomalies.filter { $0.rule != .cleartextLogin }.isEmpty)
        #expect(events.replies.filter { $0.multiline }.map(\.inResponseTo) == ["TOP", "UIDL"])
        let machine = script.machine()
        #expect(machine.maildrop.sizes[2] == 200)
        #expect(machine.maildrop.deleted.isEmpty)
        #expect(machine.maildrop.uniqueIDs[1] == "whqtswO00WBw418f9t5JxYwZ")
        #expect(machine.state == .closed)
    }

    static let userPassScript = Script(
        "RFC 1939 §7 USER/PASS",
        [
            .server("+OK POP3 server ready\r\n"),
            .client("USER frated\r\n"), .server("-ERR sorry, no mailbox for frated here\r\n"),
            .client("USER mrose\r\n"), .server("+OK mrose is a real hoopy frood\r\n"),
            .client("PASS secret\r\n"), .server("-ERR maildrop already locked\r\n"),
            .client("USER mrose\r\n"), .server("+OK mrose is a real hoopy frood\r\n"),
            .client("PASS secret\r\n"), .server("+OK mrose's maildrop has 2 messages (320 octets)\r\n"),
        ]
    )

    @Test("RFC 1939 §7 USER/PASS examples: a refused name and a refused password keep AUTHORIZATION")
    func userPass() {
        let events = Self.userPassScript.run()
        #expect(events.states == [.authorization, .userAccepted, .authorization, .userAccepted, .transaction])
        #expect(!events.allText.contains("secret"))
    }
}
