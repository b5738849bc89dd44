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
        """

    @Test("the export holds every session, masks secrets with as many octets, and reads the same in inspect and tshark")
    func export() async throws {
        let dovecot = try Dovecot(messages: [
            Array("Subject: one\r\n\r\nHello.\r\n.dot\r\n".utf8), Array("Subject: two\r\n\r\nBye.\r\n".utf8),
        ])
        let directory = ServeProcessTests.temporary("pcap")
        let log = ServeProcessTests.temporary("pcap-log")
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: log)
        }
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)", "--pcap", directory],
            log: log
        )
        _ = try await runTool("python3", ["-c", Self.clients, "\(port)"])
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()

        // Session ids end in a counter.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".pcap") }
            .sorted { $0.count == $1.count ? $0 < $1 : $0.count < $1.count }
        try #require(files.count == 3)

        var fromInspect: [[String]] = []
        var fromTshark: [[String]] = []
        for file in files {
            let path = directory + "/" + file
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            let text = String(decoding: bytes, as: UTF8.self)
            for secret in ["wonderland", "d29uZGVybGFuZA", "AGFsaWNlAHdvbmRlcmxhbmQ", "VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
                #expect(!text.contains(secret), "\(file) holds \(secret)")
            }

            let (status, output) = try await InspectProcessTests.inspect(["--format", "json", path])
            #expect(status == 0, "\(output)")
            let decoder = JSONDecoder()
            let records = output.split(separator: "\n").compactMap {
                try? decoder.decode(TranscriptRecord.self, from: Data($0.utf8))
            }
            fromInspect.append(records.filter { $0.kind == "command" }.compactMap(\.verb))

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
        // Same length: ten octets of password, ten stars.
        #expect(all[0].contains("PASS **********\r\n"))
        #expect(all[1].contains("AUTH PLAIN\r\n") && all[1].contains(String(repeating: "*", count: 24) + "\r\n"))
        #expect(all[1].contains("NOOP " + String(repeating: "x", count: 250)))
        #expect(all[2].contains("+ ************\r\n"))

        #expect(
            fromInspect[0] == ["USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT"]
        )
        #expect(fromInspect[1] == ["NOOP", "AUTH", "STAT", "QUIT"])
        #expect(fromInspect[2] == ["AUTH", "LIST", "QUIT"])
        for (ours, theirs) in zip(fromInspect, fromTshark) {
            // tshark reads SASL responses as commands too; every command it names in order is ours.
            #expect(theirs.filter { !$0.contains("*") } == ours, "tshark: \(theirs)")
        }
    }
}
