import Foundation
import PopgateTestSupport
import Testing

/// The project's own captures in Captures/ (recorded by scripts/record-captures.sh) and their golden
/// transcripts: `popgate inspect` must keep reading them the same way.
@Suite("Captures/ golden transcripts", .timeLimit(.minutes(1)))
struct GoldenCaptureTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Captures").path

    static let names = [
        "every-command", "apop-and-pipelining", "auth-plain", "auth-login", "stls", "drop-mid-retr", "misbehaving",
    ]

    @Test("each capture reads exactly as its golden transcript", arguments: names)
    func golden(_ name: String) async throws {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        let output = try await runTool(binary.path, ["inspect", "--color", "never", Self.directory + "/\(name).pcap"])
        let golden = try String(contentsOfFile: Self.directory + "/\(name).txt", encoding: .utf8)
        #expect(output == golden)
        #expect(!golden.contains("wonderland"))
        #expect(!golden.contains("nobody-asked"))
    }

    @Test("the captures show what they were recorded for")
    func content() throws {
        func text(_ name: String) throws -> String {
            try String(contentsOfFile: Self.directory + "/\(name).txt", encoding: .utf8)
        }
        let every = try text("every-command")
        for verb in ["CAPA", "USER", "PASS", "STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "NOOP", "RSET", "QUIT"] {
            #expect(every.contains("\nC: \(verb)"), "\(verb)")
        }
        #expect(try text("apop-and-pipelining").contains("C: APOP alice ********"))
        #expect(try text("apop-and-pipelining").contains("R30"))
        #expect(try text("auth-plain").contains("C: AUTH PLAIN"))
        let login = try text("auth-login")
        #expect(login.contains("C: AUTH LOGIN"))
        #expect(login.components(separatedBy: "S: + ********\n").count == 3)
        #expect(login.components(separatedBy: "C: ********\n").count == 3)
        let stls = try text("stls")
        #expect(stls.contains("S: +OK Dovecot"))
        #expect(stls.contains("C: STLS"))
        #expect(stls.contains("C: [TLS ClientHello: TLS 1.3, server name localhost]"))
        #expect(stls.contains("S: [TLS ServerHello: TLS 1.3"))
        #expect(!stls.contains("without QUIT"))
        #expect(try text("drop-mid-retr").contains("RETR cut short"))
        let bad = try text("misbehaving")
        for rule in ["R13", "R15", "R3 ", "R20", "R19", "R1 "] { #expect(bad.contains("! \(rule)"), "\(rule)") }
    }
}
