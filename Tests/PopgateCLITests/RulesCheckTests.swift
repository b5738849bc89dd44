import Foundation
import PopgateTestSupport
import Testing

/// `popgate rules check FILE` as a process: the shipped rules are valid, a bad file's errors are each shown.
@Suite("popgate rules check", .timeLimit(.minutes(1)))
struct RulesCheckTests {
    static func check(_ path: String) async throws -> (Int32?, String) {
        try await Self.rules(["check", path])
    }

    static func rules(_ arguments: [String]) async throws -> (Int32?, String) {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        let log = ServeProcessTests.temporary("rules-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(binary.path, ["rules"] + arguments, output: log)
        let status = await process.wait(seconds: 20)
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    static var shipped: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Rules").path
    }

    @Test("rules explain: a refused address exits 2 naming the deny line; an admitted one gets its limits, exit 0")
    func explain() async throws {
        let path = Self.shipped + "/default.rules"
        let (refused, refusal) = try await Self.rules(["explain", path, "--from", "192.0.2.7"])
        #expect(refused == 2)
        #expect(refusal.contains("192.0.2.7: refused by \(path):7 (deny from any)"), "\(refusal)")
        let (admitted, limits) = try await Self.rules(["explain", path, "--from", "::ffff:10.1.2.3", "--user", "al"])
        #expect(admitted == 0)
        #expect(limits.contains("10.1.2.3: admitted by \(path):5"), "\(limits)")
        #expect(limits.contains("at most 60 connection(s) per minute from 10.1.2.3"))
        #expect(limits.contains("logins as al are refused for 1 hour   (\(path):12)"), "\(limits)")
        let (bad, usage) = try await Self.rules(["explain", path, "--from", "10.1.2"])
        #expect(bad == 64)
        #expect(usage.contains("--from 10.1.2 is not an IP address"))
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

    @Test("the annotated examples (a gateway, a developer, a classroom) are valid")
    func examples() async throws {
        let directory = Self.shipped + "/examples"
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".rules") }
        #expect(Set(files) == ["gateway.rules", "developer.rules", "classroom.rules"])
        for file in files {
            let (status, output) = try await Self.check(directory + "/" + file)
            #expect(status == 0, "\(output)")
        }
        let (_, gateway) = try await Self.check(directory + "/gateway.rules")
        #expect(gateway.contains("deny  from 1 address range(s), closed without a reply"), "\(gateway)")
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
