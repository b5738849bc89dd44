import Foundation
import POP3Core
import PopgateTestSupport
import Testing

/// `popgate serve --pcap DIR`: each session's plaintext as a pcap file, secrets masked keeping their length,
/// read back by `popgate inspect` and by tshark.
@Suite("popgate serve --pcap", .timeLimit(.minutes(3)))
struct ServePCAPTests {
    /// Three sessions through the gateway to Dovecot: poplib with USER/PASS and most commands; AUTH PLAIN
    /// answered after an empty challenge, with an over-long line first; AUTH LOGIN with its two challenges.
    static let clients = """
        import poplib, socket, base64, sys
        port = int(sys.argv[1])
        p = poplib.POP3('127.0.0.1', port)
        p.user('alice'); p.pass_('wonderland')
        p.stat(); p.list(); p.uidl(); p.retr(1); p.top(2, 0); p.dele(2); p.rset(); p.noop(); p.quit()

        def raw(lines):
            s = socket.create_connection(('127.0.0.1', port)); f = s.makefile('rb'); f.readline()
            for line, replies in lines:
                s.sendall(line + b'\\r\\n')
                for _ in range(replies): f.readline()
            s.close()

        plain = base64.b64encode(b'\\0alice\\0wonderland')
        raw([(b'NOOP ' + b'x' * 300, 1), (b'AUTH PLAIN', 1), (plain, 1), (b'STAT', 1), (b'QUIT', 1)])
        raw([(b'AUTH LOGIN', 1), (base64.b64encode(b'alice'), 1), (base64.b64encode(b'wonderland'), 1),
             (b'LIST 1', 1), (b'QUIT', 1)])
        raw([(b'AUTH PLAIN ' + plain, 1), (b'QUIT', 1)])
        a = poplib.POP3('127.0.0.1', port); a.apop('alice', 'wonderland'); a.stat(); a.quit()
        import hmac
        s = socket.create_connection(('127.0.0.1', port)); f = s.makefile('rb'); f.readline()
        s.sendall(b'AUTH CRAM-MD5\\r\\n'); challenge = f.readline().strip()[2:]
        digest = hmac.new(b'wonderland', base64.b64decode(challenge), 'md5').hexdigest()
        s.sendall(base64.b64encode(b'alice ' + digest.encode()) + b'\\r\\n'); f.readline()
        s.sendall(b'QUIT\\r\\n'); f.readline(); s.close()
        """

    @Test("the export holds every session, masks secrets with as many octets, and reads the same in inspect and tshark")
    func export() async throws {
        // CRAM-MD5 only here: clients such as curl prefer it, and Dovecot's penalty for failed CRAM-MD5 logins
        // (a new response each time) would slow the tests that fail logins on purpose.
        let dovecot = try Dovecot(
            messages: [
                Array("Subject: one\r\n\r\nHello.\r\n.dot\r\n".utf8), Array("Subject: two\r\n\r\nBye.\r\n".utf8),
            ],
            extraMechanisms: ["cram-md5"]
        )
        let directory = ServeProcessTests.temporary("pcap")
        let log = ServeProcessTests.temporary("pcap-log")
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        let transcripts = directory + "-transcripts"
        defer { try? FileManager.default.removeItem(atPath: transcripts) }
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)", "--pcap", directory, "--transcripts", transcripts],
            log: log
        )
        _ = try await runTool("python3", ["-c", Self.clients, "\(port)"])
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        let dovecotPort = dovecot.port
        await dovecot.stop()
        let gatewayLog = try String(contentsOfFile: log, encoding: .utf8)

        // Session ids end in a counter.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".pcap") }
            .sorted { $0.count == $1.count ? $0 < $1 : $0.count < $1.count }
        try #require(files.count == 6)

        var fromInspect: [[String]] = []
        var fromTshark: [[String]] = []
        for file in files {
            let path = directory + "/" + file
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let text = String(decoding: bytes, as: UTF8.self)
            for secret in ["wonderland", "d29uZGVybGFuZA", "AGFsaWNlAHdvbmRlcmxhbmQ", "YWxpY2Ug"] {
                #expect(!text.contains(secret), "\(file) holds \(secret)")
            }

            let (status, output) = try await InspectProcessTests.inspect(["--format", "json", path])
            #expect(status == 0, "\(output)")
            let decoder = JSONDecoder()
            let records = output.split(separator: "\n").compactMap {
                try? decoder.decode(TranscriptRecord.self, from: Data($0.utf8))
            }
            fromInspect.append(records.filter { $0.kind == "command" }.compactMap(\.verb))
            // The export reads back with the relay's own findings, no more and no fewer: the masks keep the
            // syntax of what they hide.
            let id = String(file.dropLast(5))
            let relayed = try String(contentsOfFile: transcripts + "/" + id + ".jsonl", encoding: .utf8)
                .split(separator: "\n").compactMap { try? decoder.decode(TranscriptRecord.self, from: Data($0.utf8)) }
            func findings(_ records: [TranscriptRecord]) -> [String] {
                records.filter { $0.kind == "anomaly" && $0.side != "capture" }.map {
                    // An over-long line's export keeps its first octets and says how long it was: the count
                    // read back is of what was kept.
                    $0.rule == "R3" ? "R3 \($0.side ?? "")" : "\($0.rule ?? "") \($0.side ?? "") \($0.reason ?? "")"
                }.sorted()
            }
            #expect(findings(records) == findings(relayed), "\(file)")
            // One session, one name: the export's file, what inspect calls it, the transcript and the log line.
            #expect(!records.isEmpty && records.allSatisfy { $0.session == id }, "\(file)")
            let header =
                try String(contentsOfFile: transcripts + "/" + id + ".txt", encoding: .utf8)
                .split(separator: "\n").first ?? ""
            #expect(header.contains("── session \(id)  127.0.0.1:"), "\(header)")
            #expect(header.contains(" → gateway 127.0.0.1:\(port) → 127.0.0.1:\(dovecotPort)"), "\(header)")
            #expect(gatewayLog.contains("session=\(id)"), "\(id)")

            let fields = try await runTool(
                "tshark",
                [
                    "-r", path, "-d", "tcp.port==\(port),pop", "-Y", "pop.request.command", "-T", "fields", "-e",
                    "pop.request.command",
                ]
            )
            fromTshark.append(
                fields.split(separator: "\n").flatMap { $0.split(separator: ",") }.map { $0.uppercased() }
            )
        }
        let all = try files.map {
            String(decoding: try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)), as: UTF8.self)
        }
        // Same length: ten octets of password, ten stars; base64 payloads as the base64 of as many x, NULs kept.
        #expect(all[0].contains("PASS **********\r\n"))
        #expect(all[1].contains("AUTH PLAIN\r\n") && all[1].contains("AHh4eHh4AHh4eHh4eHh4eHg=\r\n"))
        #expect(all[1].contains("NOOP " + String(repeating: "x", count: 250)))
        // LOGIN's prompts are not secret; its answers are masked.
        #expect(
            all[2].contains("+ VXNlcm5hbWU6\r\n") && all[2].contains("eHh4eHg=\r\n")
                && all[2].contains("eHh4eHh4eHh4eA==\r\n")
        )
        #expect(all[3].contains("AUTH PLAIN AHh4eHh4AHh4eHh4eHh4eHg=\r\n"))
        #expect(all[4].contains("APOP alice 00000000000000000000000000000000\r\n"))
        // CRAM-MD5's challenge (a nonce) is kept; the answer's digest is not.
        #expect(all[5].contains("AUTH CRAM-MD5\r\n") && all[5].contains("+ PD"), "the challenge, base64 of <...>")

        #expect(
            fromInspect[0] == ["USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT"]
        )
        #expect(fromInspect[1] == ["NOOP", "AUTH", "STAT", "QUIT"])
        #expect(fromInspect[2] == ["AUTH", "LIST", "QUIT"])
        #expect(fromInspect[3] == ["AUTH", "QUIT"])
        #expect(fromInspect[4] == ["APOP", "STAT", "QUIT"])
        #expect(fromInspect[5] == ["AUTH", "QUIT"])
        for (ours, theirs) in zip(fromInspect, fromTshark) {
            // tshark reads SASL responses as commands too; every command it names in order is ours.
            let keywords: Set<String> = [
                "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL",
                "CAPA",
            ]
            #expect(theirs.filter { keywords.contains($0) } == ours, "tshark: \(theirs)")
        }
    }
}
