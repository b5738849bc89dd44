import Foundation
import PopgateTestSupport
import Testing

@testable import PopgateCLI

/// `popgate inspect` as a process: output and exit codes on good and damaged files.
@Suite("popgate inspect process", .timeLimit(.minutes(1)))
struct InspectProcessTests {
    static let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/captures").path

    static func inspect(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let binary = try #require(popgateBinary(), "build the popgate product first (swift build)")
        let log = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-inspect-\(UUID().uuidString.prefix(8))"
        ).path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(binary.path, ["inspect", "--color", "never"] + arguments, output: log)
        let status = await process.wait(seconds: 30)
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    static func temporaryFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "popgate-cap-\(UUID().uuidString.prefix(8)).pcap"
        ).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("a good capture: the annotated transcript, credentials masked, exit 0")
    func good() async throws {
        let (status, output) = try await Self.inspect([Self.shared + "/zeek/pop3.pcap"])
        #expect(status == 0)
        #expect(output.contains("C: AUTH PLAIN"))
        #expect(output.contains("C: ********"))
        #expect(!output.contains("napier"))
        #expect(output.components(separatedBy: "── session ").count == 6)
    }

    @Test("a file that is not a capture: a clear message, exit 2")
    func notACapture() async throws {
        let path = try Self.temporaryFile(Array("this is not a capture file at all\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try await Self.inspect([path])
        #expect(status == 2)
        #expect(output.contains("popgate inspect: \(path):"))
    }

    @Test("a truncated capture: the sessions read before the damage are printed, then exit 2")
    func truncated() async throws {
        let whole = try Data(contentsOf: URL(fileURLWithPath: Self.shared + "/zeek/pop3.pcap"))
        let path = try Self.temporaryFile(Array(whole.prefix(whole.count * 2 / 3)) + [0x01, 0x02, 0x03])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try await Self.inspect(["--summary", path])
        #expect(status == 2)
        #expect(output.contains("session 1 "))
        #expect(output.contains("popgate inspect:"))
    }

    @Test("an unsupported link type: a clear message, exit 2")
    func linkType() async throws {
        // A classic pcap header (little-endian) with link type 147 (a private one) and no packets.
        var header: [UInt8] = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        header += [147, 0, 0, 0]
        let path = try Self.temporaryFile(header)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try await Self.inspect([path])
        #expect(status == 2)
        #expect(output.contains("link type 147 is not supported"))
    }
}

extension InspectProcessTests {
    @Test("--flow-buffer: a hole with more waiting behind it is given up, reported on stderr and in the summary")
    func flowBuffer() async throws {
        // PASS arrives before USER: USER is a hole with 17 octets waiting behind it.
        var capture = SyntheticCapture()
        capture.swap = (1, 3)
        let path = try Self.temporaryFile(capture.bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }

        let (status, output) = try await Self.inspect(["--summary", path])
        #expect(status == 0)
        #expect(output.contains("5 commands"))
        #expect(!output.contains("reassembly limits"))

        let (limited, report) = try await Self.inspect(["--summary", "--flow-buffer", "16", path])
        #expect(limited == 0)
        #expect(report.contains("--flow-buffer 1 time"))
        #expect(report.contains("1 holes given up at a memory limit"))
        #expect(report.contains("4 commands"))
    }

    @Test(
        "--flow-buffer and --total-buffer take K, M and G; nonsense is refused",
        arguments: [
            ("4K", 4096), ("2M", 2 << 20), ("1GiB", 1 << 30), ("1234", 1234),
        ]
    )
    func sizes(text: String, octets: Int) throws {
        let command = try Popgate.Inspect.parse(["--flow-buffer", text, "--total-buffer", text, "x.pcap"])
        #expect(command.reassembly.flowBuffer?.octets == octets)
        #expect(command.reassembly.totalBuffer?.octets == octets)
        #expect(throws: (any Error).self) { try Popgate.Inspect.parse(["--flow-buffer", "4X", "x.pcap"]) }
        #expect(throws: (any Error).self) { try Popgate.Inspect.parse(["--total-buffer", "0", "x.pcap"]) }
    }
}
