import Foundation
import NIOPosix
import POP3Core
import POP3Server
import PopgateTestSupport
import Testing

/// The project's own captures, replayed: each session's client side (as tshark reassembles it) sent through
/// `popgate serve --pcap --transcripts` to the embedded server, whose mechanisms (USER/PASS, APOP, PLAIN,
/// LOGIN) they cover. Each export, read back by `popgate inspect`, must have exactly the relay's own findings:
/// the masks keep the syntax of what they hide, and the inspector and the relay agree on the same bytes.
@Suite("Captures/ replayed through the gateway, export read back", .timeLimit(.minutes(3)))
struct CaptureReplayTests {
    static let captures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Captures").path

    /// Each TCP stream's client chunks, in order, from `tshark -z follow,tcp,raw`.
    static func clientChunks(_ file: String) async throws -> [[[UInt8]]] {
        let streams = try await runTool("tshark", ["-r", file, "-T", "fields", "-e", "tcp.stream"])
        let numbers = Set(streams.split(separator: "\n").compactMap { Int($0) }).sorted()
        var sessions: [[[UInt8]]] = []
        for number in numbers {
            let follow = try await runTool("tshark", ["-r", file, "-q", "-z", "follow,tcp,raw,\(number)"])
            var chunks: [[UInt8]] = []
            for line in follow.split(separator: "\n") {
                // Node 1 (the server)'s data is indented; the client's is not.
                guard !line.hasPrefix("\t"), !line.isEmpty, line.allSatisfy(\.isHexDigit) else { continue }
                var bytes: [UInt8] = []
                var index = line.startIndex
                while index < line.endIndex {
                    let next = line.index(index, offsetBy: 2)
                    bytes.append(UInt8(line[index..<next], radix: 16)!)
                    index = next
                }
                chunks.append(bytes)
            }
            sessions.append(chunks)
        }
        return sessions
    }

    /// Sends each chunk, then reads what comes for a moment, as the recorded client did.
    static func replay(_ chunks: [[UInt8]], port: Int) async throws {
        let socket = try RawSocket(port: port)
        _ = await socket.readUntil("\r\n", seconds: 5)
        for chunk in chunks {
            socket.sendBytes(chunk)
            _ = await socket.readUntil("\r\n", seconds: 1)
        }
        socket.close()
    }

    static func findings(_ records: [TranscriptRecord]) -> [String] {
        records.filter { $0.kind == "anomaly" && $0.side != "capture" }.map {
            // An over-long line's export keeps its first octets: the length read back is of what was kept.
            $0.rule == "R3" ? "R3 \($0.side ?? "")" : "\($0.rule ?? "") \($0.side ?? "") \($0.reason ?? "")"
        }.sorted()
    }

    static func records(_ text: String) -> [TranscriptRecord] {
        let decoder = JSONDecoder()
        return text.split(separator: "\n").compactMap {
            try? decoder.decode(TranscriptRecord.self, from: Data($0.utf8))
        }
    }

    @Test("every Captures/ session: the export read back by inspect has the relay's findings, no more, no fewer")
    func replayed() async throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.captures).filter { $0.hasSuffix(".pcap") }
            .sorted()
        try #require(files.count >= 7)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let upstream = try await EmbeddedPOP3Server.start(EmbeddedPOP3Server.Configuration(), group: group)
        let directory = ServeProcessTests.temporary("replay")
        let log = ServeProcessTests.temporary("replay-log")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            [
                "--upstream", "127.0.0.1:\(upstream.port)", "--pcap", directory + "/pcap", "--transcripts",
                directory + "/tr",
            ],
            log: log
        )
        var replayed = 0
        do {
            for file in files {
                for chunks in try await Self.clientChunks(Self.captures + "/" + file) {
                    try await Self.replay(chunks, port: port)
                    replayed += 1
                }
            }
        } catch {
            await process.stop()
            throw error
        }
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        try? await upstream.stop()
        try? await group.shutdownGracefully()
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        let exports = try FileManager.default.contentsOfDirectory(atPath: directory + "/pcap").filter {
            $0.hasSuffix(".pcap")
        }
        #expect(exports.count == replayed)
        var withFindings = 0
        for file in exports.sorted() {
            let id = String(file.dropLast(5))
            let relayed = Self.records(try String(contentsOfFile: directory + "/tr/\(id).jsonl", encoding: .utf8))
            let (status, output) = try await InspectProcessTests.inspect([
                "--format", "json", directory + "/pcap/" + file,
            ])
            #expect(status == 0, "\(output)")
            let read = Self.records(output)
            #expect(Self.findings(read) == Self.findings(relayed), "\(file)")
            if !Self.findings(relayed).isEmpty { withFindings += 1 }
        }
        // The misbehaving capture and the cleartext logins give findings: the comparison is not of empty sets.
        #expect(withFindings >= 4)
    }
}

/// A client that rejects the upstream's certificate after STLS passed through (TLS 1.2: its fatal alert crosses
/// in clear): the gateway's export, read back, blames the client's rejection on nobody but the client.
@Suite("a client's TLS alert, in the relay and in the inspector", .timeLimit(.minutes(2)))
struct ClientAlertTests {
    @Test("openssl rejects Dovecot's certificate after STLS: no finding against the server, in the relay or the export")
    func clientRejectsCertificate() async throws {
        let certificates = try await TestCertificates.make()
        let dovecot = try Dovecot(tls: .stls(certificate: certificates.certificate, key: certificates.key))
        let directory = ServeProcessTests.temporary("alert")
        let log = ServeProcessTests.temporary("alert-log")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            [
                "--upstream", "127.0.0.1:\(dovecot.port)", "--pcap", directory + "/pcap", "--transcripts",
                directory + "/tr",
            ],
            log: log
        )
        let said = try await runShell(
            "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -starttls pop3 -tls1_2 -verify_return_error 2>&1"
        )
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        #expect(said.contains("verify error") || said.contains("certificate verify failed"), "\(said)")
        let exports = try FileManager.default.contentsOfDirectory(atPath: directory + "/pcap")
        let export = try #require(exports.first { $0.hasSuffix(".pcap") })
        let id = String(export.dropLast(5))
        let relayed = CaptureReplayTests.records(
            try String(contentsOfFile: directory + "/tr/\(id).jsonl", encoding: .utf8)
        )
        let (status, output) = try await InspectProcessTests.inspect([
            "--format", "json", directory + "/pcap/" + export,
        ])
        #expect(status == 0, "\(output)")
        let read = CaptureReplayTests.records(output)
        for (name, records) in [("relay", relayed), ("inspect", read)] {
            let against = records.filter { $0.kind == "anomaly" && $0.side == "server" }
            #expect(
                against.isEmpty,
                "\(name) blames the server: \(against.map { "\($0.rule ?? "") \($0.reason ?? "")" })"
            )
            #expect(records.contains { $0.kind == "tls" && $0.side == "client" }, "\(name) saw the client's hello")
            let alert = records.first { $0.kind == "note" && $0.note?.contains("ended the TLS handshake") == true }
            #expect(alert?.side == "client", "\(name): \(alert?.note ?? "no alert said")")
            #expect(alert?.note?.contains("a fatal alert") == true)
            #expect(alert?.note?.contains("did not accept the server's certificate") == true, "\(alert?.note ?? "")")
        }
        #expect(CaptureReplayTests.findings(read) == CaptureReplayTests.findings(relayed))
    }
}

/// A TLS handshake on a plaintext port: the octets the summary gives are those its lines gave.
@Suite("octet counts on a session that began TLS on a plaintext port", .timeLimit(.minutes(2)))
struct TLSOnPlaintextOctetTests {
    @Test("the end line's octets from the client are the octets the unread-TLS line counted, plus the commands'")
    func counts() async throws {
        let dovecot = try Dovecot()
        let directory = ServeProcessTests.temporary("octets")
        let log = ServeProcessTests.temporary("octets-log")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)", "--transcripts", directory],
            log: log
        )
        _ = try await runShell("echo | timeout 5 openssl s_client -connect 127.0.0.1:\(port) >/dev/null 2>&1")
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        let file = try #require(
            try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".jsonl") }
        )
        let records = CaptureReplayTests.records(try String(contentsOfFile: directory + "/" + file, encoding: .utf8))
        let opaque = records.filter { $0.kind == "opaque" && $0.side == "client" }.compactMap(\.octets).reduce(0, +)
        let commands = records.filter { $0.kind == "command" }.compactMap { $0.text?.utf8.count }.map { $0 + 2 }
            .reduce(0, +)
        #expect(opaque > 200, "the ClientHello is counted: \(records.map(\.kind))")
        let end = try #require(records.last { $0.kind == "session-end" }?.note)
        #expect(end.contains("\(opaque + commands) octets from the client"), "\(end) vs \(opaque) + \(commands)")
    }
}
