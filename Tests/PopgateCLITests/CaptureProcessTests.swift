import Foundation
import POP3Server
import PopgateTestSupport
import Testing

/// `popgate capture` on the loopback interface, around a session the test drives with curl.
@Suite("popgate capture process", .timeLimit(.minutes(1)))
struct CaptureProcessTests {
    @Test("a live session on lo is printed with its commands, and --write saves a capture inspect can read")
    func live() async throws {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        var configuration = EmbeddedPOP3Server.Configuration()
        configuration.users = ["alice": "wonderland"]
        let server = try await EmbeddedPOP3Server.start(configuration)
        let base = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-live-\(UUID().uuidString.prefix(8))"
        ).path
        defer {
            try? FileManager.default.removeItem(atPath: base + ".log")
            try? FileManager.default.removeItem(atPath: base + ".pcap")
        }
        let capture = try ChildProcess(
            binary.path,
            [
                "capture", "--interface", "lo", "--port", "\(server.port)", "--write", base + ".pcap", "--format",
                "json", "--seconds", "20",
            ],
            output: base + ".log"
        )
        // libpcap needs a moment to open the interface.
        try await Task.sleep(for: .seconds(1.5))
        let message = try await runTool(
            "curl",
            ["-s", "--max-time", "10", "pop3://alice:wonderland@127.0.0.1:\(server.port)/1"]
        )
        #expect(message.contains("Welcome to POP3"))
        try await Task.sleep(for: .seconds(1))
        capture.signal(SIGINT)
        #expect(await capture.wait(seconds: 10) == 0)
        try await server.stop()

        let output = try String(contentsOfFile: base + ".log", encoding: .utf8)
        #expect(output.contains("\"verb\":\"RETR\""))
        #expect(output.contains("\"kind\":\"session-end\""))
        #expect(!output.contains("wonderland"))
        let replay = try await runTool(
            binary.path,
            ["inspect", "--summary", "--port", "\(server.port)", base + ".pcap"]
        )
        #expect(replay.hasPrefix("session 1 "))
    }
}
