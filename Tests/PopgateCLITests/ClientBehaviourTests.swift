import Foundation
import POP3Core
import PopgateTestSupport
import Testing

/// What mainstream clients do, scripted, through the gateway to Dovecot: each session's findings are exactly
/// the ones expected (usually only the cleartext login), never a false alarm.
@Suite("Real client behaviour through the gateway", .timeLimit(.minutes(2)))
struct ClientBehaviourTests {
    /// One scenario per session, in order; each ends before the next begins.
    static let scenarios = """
        import socket, base64, hmac, sys, struct, time
        port = int(sys.argv[1])

        def session(steps, kill=False):
            s = socket.create_connection(('127.0.0.1', port)); f = s.makefile('rb'); f.readline()
            last = b''
            for send, replies in steps:
                if callable(send): send = send(last)
                s.sendall(send)
                for _ in range(replies): last = f.readline()
            if kill:
                f.read(4096)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.close()
            time.sleep(0.2)

        plain = base64.b64encode(b'\\0alice\\0wonderland')
        # 1. USER, PASS and STAT pipelined in one write, without CAPA (as fetchmail and others do).
        session([(b'USER alice\\r\\nPASS wonderland\\r\\nSTAT\\r\\n', 3), (b'QUIT\\r\\n', 1)])
        # 2. STLS without CAPA first (legal); the server has no TLS here and says -ERR.
        session([(b'STLS\\r\\n', 1), (b'QUIT\\r\\n', 1)])
        # 3. TOP with a huge line count instead of RETR (Thunderbird's header fetch).
        session([(b'USER alice\\r\\n', 1), (b'PASS wonderland\\r\\n', 1), (b'TOP 1 99999999\\r\\n', 5), (b'QUIT\\r\\n', 1)])
        # 4. LAST (obsolete), then UIDL.
        session([(b'USER alice\\r\\n', 1), (b'PASS wonderland\\r\\n', 1), (b'LAST\\r\\n', 1), (b'UIDL\\r\\n', 4), (b'QUIT\\r\\n', 1)])
        # 5. AUTH PLAIN with an initial response; 6. with a continuation; 7. cancelled with *.
        session([(b'AUTH PLAIN ' + plain + b'\\r\\n', 1), (b'QUIT\\r\\n', 1)])
        session([(b'AUTH PLAIN\\r\\n', 1), (plain + b'\\r\\n', 1), (b'QUIT\\r\\n', 1)])
        session([(b'AUTH PLAIN\\r\\n', 1), (b'*\\r\\n', 1), (b'QUIT\\r\\n', 1)])
        # 8. APOP with the greeting's timestamp.
        s = socket.create_connection(('127.0.0.1', port)); f = s.makefile('rb'); greeting = f.readline()
        stamp = greeting[greeting.index(b'<'):greeting.index(b'>') + 1]
        import hashlib
        s.sendall(b'APOP alice ' + hashlib.md5(stamp + b'wonderland').hexdigest().encode() + b'\\r\\n'); f.readline()
        s.sendall(b'QUIT\\r\\n'); f.readline(); s.close(); time.sleep(0.2)
        # 9. CRAM-MD5.
        def cram(challenge):
            digest = hmac.new(b'wonderland', base64.b64decode(challenge.strip()[2:]), 'md5').hexdigest()
            return base64.b64encode(b'alice ' + digest.encode()) + b'\\r\\n'
        session([(b'AUTH CRAM-MD5\\r\\n', 1), (cram, 1), (b'QUIT\\r\\n', 1)])
        # 10. Killed (reset) in the middle of a long RETR.
        session([(b'USER alice\\r\\n', 1), (b'PASS wonderland\\r\\n', 1), (b'RETR 2\\r\\n', 1)], kill=True)
        """

    /// What each scenario may show, and nothing else: rule and side.
    static let expected: [Set<String>] = [
        ["R35 client", "R30 client"],  // cleartext login; pipelined without having seen PIPELINING
        [],  // STLS without CAPA is legal
        ["R35 client"],
        ["R35 client", "R19 client"],  // LAST is obsolete
        ["R35 client"],
        ["R35 client"],
        ["R35 client"],  // AUTH PLAIN was begun in clear, even if cancelled
        ["R26 client"],  // APOP's MD5
        [],  // CRAM-MD5 sends no password
        // Never the server's R53: if the gateway had not read the whole reply when the client went, its own
        // close of the reply is a note of the gateway's.
        ["R35 client"],
    ]
    /// Findings that may or may not come, by timing, and are right either way.
    static let optional: [Set<String>] = Array(repeating: [], count: 9) + [["R53 gateway"]]

    @Test("ten things mainstream clients do: exactly the expected findings, and their classes")
    func scenarios() async throws {
        var large = Array("Subject: large\r\n\r\n".utf8)
        while large.count < 2 << 20 { large += Array((String(repeating: "y", count: 78) + "\r\n").utf8) }
        let dovecot = try Dovecot(
            messages: [Array("Subject: small\r\n\r\nline one\r\nline two\r\n".utf8), large],
            extraMechanisms: ["cram-md5"]
        )
        let transcripts = ServeProcessTests.temporary("clients")
        let log = ServeProcessTests.temporary("clients-log")
        defer {
            try? FileManager.default.removeItem(atPath: transcripts)
            try? FileManager.default.removeItem(atPath: log)
        }
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)", "--transcripts", transcripts],
            log: log
        )
        _ = try await runTool("python3", ["-c", Self.scenarios, "\(port)"])
        try await Task.sleep(for: .milliseconds(300))
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        let files = try FileManager.default.contentsOfDirectory(atPath: transcripts).filter { $0.hasSuffix(".jsonl") }
            .sorted { $0.count == $1.count ? $0 < $1 : $0.count < $1.count }
        try #require(files.count == Self.expected.count, "\(files)")
        let decoder = JSONDecoder()
        for (index, file) in files.enumerated() {
            let records = try String(contentsOfFile: transcripts + "/" + file, encoding: .utf8).split(separator: "\n")
                .compactMap { try? decoder.decode(TranscriptRecord.self, from: Data($0.utf8)) }
            let anomalies = records.filter { $0.kind == "anomaly" }
            let seen = Set(anomalies.map { "\($0.rule ?? "") \($0.side ?? "")" }).subtracting(Self.optional[index])
            let classes = ["R35": "security", "R30": "interop", "R19": "interop", "R26": "security", "R53": "note"]
            for anomaly in anomalies {
                #expect(anomaly.severity == classes[anomaly.rule ?? ""], "scenario \(index + 1): \(anomaly.rule ?? "")")
            }
            #expect(
                seen == Self.expected[index],
                "scenario \(index + 1): \(anomalies.map { "\($0.rule ?? "") \($0.severity ?? "") \($0.side ?? ""): \($0.reason ?? "")" })"
            )
        }
    }
}
