import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import POP3Core
import PopgateTestSupport
import Testing

@testable import POP3Server
@testable import PopgateCLI

@Suite("popgate demo", .timeLimit(.minutes(1)))
struct DemoTests {
    static func runDemo(format: TranscriptRenderer.Format) async throws -> [String] {
        let lines = NIOLockedValueBox<[String]>([])
        var configuration = EmbeddedPOP3Server.Configuration()
        configuration.users = ["alice": "wonderland"]
        try await Popgate.Demo.run(configuration, once: true, format: format, color: false, bodies: false) { batch in
            lines.withLockedValue { $0 += batch }
        }
        return lines.withLockedValue { $0 }
    }

    @Test("the JSON transcript has every RFC 1939 command and CAPA, the deliberate mistake's anomaly, and no secret")
    func json() async throws {
        let lines = try await Self.runDemo(format: .json)
        let records = try lines.map { try JSONDecoder().decode(TranscriptRecord.self, from: Data($0.utf8)) }
        #expect(records.allSatisfy { $0.v == 1 && $0.session == records[0].session })
        let verbs = Set(records.filter { $0.kind == "command" }.compactMap(\.verb))
        #expect(
            verbs == [
                "USER", "PASS", "APOP", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA",
            ]
        )
        #expect(records.contains { $0.kind == "anomaly" && $0.rule == "R13" && $0.side == "client" })
        #expect(records.filter { $0.kind == "command" }.allSatisfy { $0.note?.contains("(RFC ") == true })
        #expect(records.first?.kind == "session-start" && records.last?.kind == "session-end")
        #expect(!lines.joined().contains("wonderland"))
        #expect(!lines.joined().contains("not-the-password"))
        #expect(records.contains { $0.kind == "body" && $0.verb == "RETR" && $0.stuffed == 2 })
    }

    @Test("the text transcript shows the annotated session and the server kept only what QUIT committed")
    func text() async throws {
        let lines = try await Self.runDemo(format: .text)
        let text = lines.joined(separator: "\n")
        #expect(text.contains("C: STAT\n"))
        #expect(text.contains("! R13 violation client: STAT is valid only in TRANSACTION"))
        #expect(text.contains("C: PASS ********"))
        #expect(text.contains("DELE 1 marks message 1 as deleted; nothing is removed until the session ends with QUIT"))
        #expect(text.contains("(2 messages left)"))
        #expect(!text.contains("\u{1B}["))
    }

    @Test("the popgate binary runs the demo with --once and exits 0")
    func binary() async throws {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        let (status, output) = try runProgram(binary.path, ["demo", "--once", "--color", "always"])
        #expect(status == 0)
        let text = String(decoding: output, as: UTF8.self)
        #expect(text.contains("\u{1B}[36mC: CAPA"))
        #expect(text.contains("end of session "))
        #expect(text.contains("the gateway on 127.0.0.1:"))
    }

    @Test("bad options are refused with a clear message")
    func validation() throws {
        #expect(throws: (any Error).self) { try Popgate.parseAsRoot(["demo", "--host", "10.0.0.1"]) }
        #expect(throws: (any Error).self) { try Popgate.parseAsRoot(["demo", "--user", "nocolon"]) }
        #expect(throws: (any Error).self) { try Popgate.parseAsRoot(["demo", "--format", "xml"]) }
        let message = Popgate.message(for: ValidationError("x"))
        #expect(message == "x")
    }
}
