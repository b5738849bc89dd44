import Foundation
import PopgateTestSupport
import Testing

/// `popgate rules check FILE` as a process: the shipped rules are valid, a bad file's errors are each shown.
@Suite("popgate rules check", .timeLimit(.minutes(1)))
struct RulesCheckTests {
    static func check(_ path: String) async throws -> (Int32?, String) {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        let log = ServeProcessTests.temporary("rules-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(binary.path, ["rules", "check", path], output: log)
        let status = await process.wait(seconds: 20)
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    @Test("Rules/default.rules is valid, and its policy is summed up with the line of each rule")
    func shippedRules() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("Rules/default.rules").path
        let (status, output) = try await Self.check(path)
        #expect(status == 0, "\(output)")
        #expect(output.contains("\(path): valid"))
        #expect(output.contains("deny  from any address   (\(path):7)"), "\(output)")
    }

    @Test("a file with errors: each with line, column and hint, a count, exit code 1")
    func badFile() async throws {
        let path = ServeProcessTests.temporary("bad") + ".rules"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "allow from 10.0.0.0/40\n\nlimit sessions x concurrent per client-ip\n".write(
            toFile: path,
            atomically: true,
            encoding: .utf8
        )
        let (status, output) = try await Self.check(path)
        #expect(status == 1)
        #expect(output.contains("\(path):1:12: \"/40\" is not a prefix length from 0 to 32\n  hint: a prefix is"))
        #expect(output.contains("\(path):3:16: expected a count of at least 1\n  hint: limit sessions 5 concurrent"))
        #expect(output.contains("2 errors in \(path)"))
    }
}
