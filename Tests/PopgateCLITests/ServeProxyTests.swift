import Foundation
import PopgateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `popgate serve --proxy-protocol` behind Debian's HAProxy (`send-proxy`, `send-proxy-v2`), in front of a real
/// Dovecot, with clients bound to 127.0.0.2 and 127.0.0.3 so that the rules see each; and raw peers for what
/// HAProxy would never send.
@Suite("popgate serve --proxy-protocol, end to end", .timeLimit(.minutes(3)))
struct ServeProxyTests {
    /// A gateway with a plaintext and a TLS listener, both behind the PROXY protocol, trusting 127.0.0.1.
    struct Gateway {
        let process: ChildProcess
        let plain: Int
        let tls: Int
        let log: String
        let transcripts: String
        let rules: String

        init(dovecot: Dovecot, certificates: TestCertificates, rules: String = "deny from 127.0.0.3\n") async throws {
            self.log = ServeProcessTests.temporary("proxy-log")
            self.transcripts = ServeProcessTests.temporary("proxy-tr")
            self.rules = ServeProcessTests.temporary("proxy") + ".rules"
            try rules.write(toFile: self.rules, atomically: true, encoding: .utf8)
            self.process = try ServeProcessTests.serve(
                [
                    "--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0", "--cert", certificates.certificate,
                    "--key", certificates.key, "--upstream", "127.0.0.1:\(dovecot.port)", "--proxy-protocol",
                    "--proxy-trusted", "127.0.0.1", "--proxy-header-timeout", "3", "--rules", self.rules,
                    "--transcripts", self.transcripts,
                ],
                log: self.log
            )
            var ports: (Int?, Int?) = (nil, nil)
            let log = self.log
            for _ in 0..<500 where ports.0 == nil || ports.1 == nil {
                for line in ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n") {
                    guard let range = line.range(of: "listening on 127.0.0.1:") else { continue }
                    let port = Int(line[range.upperBound...].prefix { $0.isNumber })
                    if line.contains("(TLS)") { ports.1 = port } else { ports.0 = port }
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            guard let plain = ports.0, let tls = ports.1 else {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                throw ChildProcess.Failure(description: "no ports in the log: \(output)")
            }
            (self.plain, self.tls) = (plain, tls)
        }

        var output: String { (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? "" }

        /// Every transcript's JSON lines, joined.
        var records: String {
            let files = (try? FileManager.default.contentsOfDirectory(atPath: self.transcripts)) ?? []
            return files.filter { $0.hasSuffix(".jsonl") }
                .compactMap { try? String(contentsOfFile: self.transcripts + "/" + $0, encoding: .utf8) }.joined()
        }

        func stop() async {
            await self.process.stop()
            for path in [self.log, self.transcripts, self.rules] { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    static func curl(_ url: String, from source: String, extra: String = "") async throws -> (String, Int) {
        let output = try await runShell(
            "curl -sS --max-time 10 \(extra) --interface \(source) -u alice:wonderland \(url); echo \"exit=$?\""
        )
        return (output, output.components(separatedBy: "exit=").last.flatMap { Int($0.filter(\.isNumber)) } ?? -1)
    }

    @Test("behind send-proxy and send-proxy-v2: 127.0.0.2 reads its mail, 127.0.0.3 is refused by the rules")
    func throughHAProxy() async throws {
        let dovecot = try Dovecot(messages: [Array("Subject: x\r\n\r\nhello\r\n".utf8)])
        let certificates = try await TestCertificates.make()
        let gateway = try await Gateway(dovecot: dovecot, certificates: certificates)
        let haproxy = try HAProxy([(gateway.plain, .v1), (gateway.plain, .v2), (gateway.tls, .v2)])
        for port in haproxy.ports.prefix(2) {
            let (listing, code) = try await Self.curl("pop3://127.0.0.1:\(port)/", from: "127.0.0.2")
            #expect(code == 0 && listing.hasPrefix("1 "), "\(listing)")
            let socket = try RawSocket(port: port, from: "127.0.0.3")
            #expect(
                await socket.readAll(seconds: 5)
                    == "-ERR [SYS/PERM] connections from 127.0.0.3 are not accepted here\r\n"
            )
            socket.close()
        }
        // TLS behind send-proxy-v2: the header first, then the handshake, which the gateway terminates.
        let (listing, code) = try await Self.curl(
            "pop3s://127.0.0.1:\(haproxy.ports[2])/",
            from: "127.0.0.2",
            extra: "--cacert \(certificates.certificate)"
        )
        #expect(code == 0 && listing.hasPrefix("1 "), "\(listing)\n\(gateway.output)")
        let (_, refused) = try await Self.curl(
            "pop3s://127.0.0.1:\(haproxy.ports[2])/",
            from: "127.0.0.3",
            extra: "--cacert \(certificates.certificate)"
        )
        #expect(refused != 0)
        try await Task.sleep(for: .milliseconds(300))
        // The transcripts and the log name the client, and the balancer it came through.
        #expect(gateway.records.contains("\"client\":\"127.0.0.2:"), "\(gateway.records.prefix(600))")
        #expect(gateway.records.contains("\"via\":\"127.0.0.1\""))
        #expect(gateway.output.contains("refused client=127.0.0.3"))
        #expect(gateway.output.contains("client=127.0.0.2:") && gateway.output.contains(" via 127.0.0.1"))
        await haproxy.stop()
        await gateway.stop()
        await dovecot.stop()
    }

    @Test("what HAProxy would never send: an untrusted peer, no header in time, split, malformed, oversized, LOCAL")
    func rawPeers() async throws {
        let dovecot = try Dovecot()
        let certificates = try await TestCertificates.make()
        let gateway = try await Gateway(dovecot: dovecot, certificates: certificates, rules: "\n")
        // A valid header, from a peer that is not a trusted balancer: closed before a word.
        let untrusted = try RawSocket(port: gateway.plain, from: "127.0.0.2")
        untrusted.send("PROXY TCP4 192.0.2.7 127.0.0.1 5000 110\r\n")
        #expect(await untrusted.readAll(seconds: 5) == "")
        untrusted.close()
        #expect(
            try await ServeProcessTests.waitForLog(
                gateway.log,
                "closing a connection from 127.0.0.2: not a trusted balancer"
            )
        )
        // Trusted, silent: closed after the header timeout (3 s here, with room for a loaded machine).
        let silent = try RawSocket(port: gateway.plain)
        #expect(await silent.readAll(seconds: 5) == "")
        silent.close()
        #expect(try await ServeProcessTests.waitForLog(gateway.log, "no PROXY header within 3.0 s"))
        // Split across reads, with the client's first line after it: the greeting, then CAPA's answer.
        let split = try RawSocket(port: gateway.plain)
        split.send("PROXY TCP4 198.51.100.9 127.0.0.1")
        try await Task.sleep(for: .milliseconds(200))
        split.send(" 40000 110\r\nCAPA\r\n")
        let replies = await split.readUntil("\r\n.\r\n")
        #expect(replies.hasPrefix("+OK") && replies.contains("\r\nUSER\r\n"), "\(replies)")
        split.close()
        // Malformed and oversized: closed, each with its reason in the log.
        for (bytes, reason) in [
            (Array("PROXY TCP4 198.51.100.9 127.0.0.1 40000 70000\r\n".utf8), "a port that is not 0 to 65535"),
            (
                [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0xFF, 0xFF],
                "over the limit of 1024"
            ),
            (Array("USER alice\r\n".utf8), "no PROXY header"),
        ] {
            let socket = try RawSocket(port: gateway.plain)
            socket.sendBytes(bytes)
            #expect(await socket.readAll(seconds: 5) == "")
            socket.close()
            #expect(try await ServeProcessTests.waitForLog(gateway.log, reason))
        }
        // v2 LOCAL (a balancer's health check): served as the balancer's own connection.
        let local = try RawSocket(port: gateway.plain)
        local.sendBytes([
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
        ])
        #expect(await local.readUntil("\r\n").hasPrefix("+OK"))
        local.send("QUIT\r\n")
        _ = await local.readAll(seconds: 5)
        local.close()
        // None of these reached Dovecot but the split one and LOCAL.
        #expect(!gateway.output.contains("upstream closed"))
        await gateway.stop()
        await dovecot.stop()
    }
}
