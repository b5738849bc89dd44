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

    @Test("a capture that stops with the connection open says so: capture-ended, no side closed")
    func captureEnded() async throws {
        var open = SyntheticCapture()
        open.exchange = Array(SyntheticCapture.session.prefix(7))
        open.closes = false
        let path = try Self.temporaryFile(open.bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (_, text) = try await Self.inspect([path])
        #expect(text.contains("·· The capture ended; the connection was still open"), "\(text)")
        #expect(text.contains("the capture ended in TRANSACTION, the connection still open"))
        #expect(!text.contains("closed the connection"))
        let (_, json) = try await Self.inspect(["--format", "json", path])
        #expect(json.contains("\"kind\":\"session-end\"") && json.contains("\"state\":\"capture-ended\""))
        #expect(json.contains("\"side\":\"capture\""))
        let (_, summary) = try await Self.inspect(["--summary", "--format", "json", path])
        #expect(summary.contains("\"state\":\"capture-ended\""), "\(summary)")
        // Closed by both sides: no such words.
        let closedPath = try Self.temporaryFile(SyntheticCapture().bytes)
        defer { try? FileManager.default.removeItem(atPath: closedPath) }
        let (_, closed) = try await Self.inspect(["--summary", closedPath])
        #expect(!closed.contains("capture ended") && closed.contains("ended in closed"), "\(closed)")
    }

    @Test("--summary ends with the totals, which add up the session lines")
    func summaryTotals() async throws {
        let (status, output) = try await Self.inspect(["--summary", Self.shared + "/zeek/pop3.pcap"])
        #expect(status == 0)
        let lines = output.split(separator: "\n")
        let sessions = lines.filter { $0.hasPrefix("session ") }
        let commands = sessions.compactMap { line in
            line.components(separatedBy: "  ").last?.split(separator: " ").first.flatMap { Int($0) }
        }.reduce(0, +)
        let totals = try #require(lines.last { $0.hasPrefix("totals: ") }, "\(output)")
        #expect(totals.hasPrefix("totals: \(sessions.count) sessions, \(commands) commands, "), "\(totals)")
        // The octets, as tshark counts them (payload of segments that are not retransmissions, by direction).
        let lengths = try await runTool(
            "tshark",
            [
                "-r", Self.shared + "/zeek/pop3.pcap", "-Y", "tcp.len>0 && !tcp.analysis.retransmission", "-T",
                "fields",
                "-e", "tcp.srcport", "-e", "tcp.len",
            ]
        )
        var (client, server) = (0, 0)
        for line in lengths.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 2, let length = Int(fields[1]) else { continue }
            if fields[0] == "110" { server += length } else { client += length }
        }
        #expect(totals.hasSuffix("\(client) octets from clients, \(server) from servers"), "\(totals)")
        let (_, json) = try await Self.inspect(["--summary", "--format", "json", Self.shared + "/zeek/pop3.pcap"])
        #expect(json.split(separator: "\n").last?.contains("\"kind\":\"totals\"") == true)
    }

    @Test("--min-severity keeps the findings of that class and above; each finding shows its class")
    func minSeverity() async throws {
        let captures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Captures").path
        let file = captures + "/apop-and-pipelining.pcap"
        let (_, all) = try await Self.inspect(["--anomalies-only", file])
        #expect(all.contains("! R26 security client:") && all.contains("! R30 interop client:"), "\(all)")
        let (status, security) = try await Self.inspect(["--anomalies-only", "--min-severity", "security", file])
        #expect(status == 0)
        #expect(security.contains("! R26 security") && !security.contains("R30"), "\(security)")
        let (bad, usage) = try await Self.inspect(["--min-severity", "loud", file])
        #expect(bad == 64 && usage.contains("loud"))
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
        // PASS arrives before USER: USER is a hole with 17 octets waiting behind it. (Without ACKs: the server's
        // reply acknowledging USER before the capture shows it would give the hole up at once.)
        var capture = SyntheticCapture()
        capture.swap = (1, 3)
        capture.acks = false
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
