import Foundation
import PopgateTestSupport
import Testing

/// `popgate serve --upstream-tls`: the gateway speaks TLS to a Dovecot that only offers POP3S.
@Suite("popgate serve with TLS to the upstream", .timeLimit(.minutes(3)))
struct ServeUpstreamTLSTests {
    @Test(
        "implicit TLS to Dovecot, verified against the test CA and name; a wrong CA or name refused; the opt-out logged"
    )
    func implicitUpstreamTLS() async throws {
        let certificates = try await TestCertificates.make()
        // A name only: NIOSSL also takes a certificate whose IP address matches the peer's, whatever the name.
        let upstreamCertificate = try await certificates.named("pop.example.test")
        let dovecot = try Dovecot(
            messages: [ServeTLSTests.message],
            tls: .implicit(certificate: upstreamCertificate, key: certificates.key)
        )
        let log = ServeProcessTests.temporary("upstream-tls-log")
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        func through(_ extra: [String]) async throws -> (String, String) {
            let (process, port) = try await ServeProcessTests.serveOnAnyPort(
                ["--upstream", "127.0.0.1:\(dovecot.port)", "--upstream-tls", "implicit"] + extra,
                log: log
            )
            let output = try await runShell(
                "curl -s -S --max-time 10 pop3://alice:wonderland@127.0.0.1:\(port)/1"
            )
            process.signal(SIGTERM)
            #expect(await process.wait(seconds: 10) == 0)
            return (output, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        }
        let verified = ["--upstream-ca", upstreamCertificate, "--upstream-server-name", "pop.example.test"]
        var (output, gatewayLog) = try await through(verified)
        #expect(output.contains("Hello through the gateway."), "\(output)\n\(gatewayLog)")
        #expect(!gatewayLog.contains("NOT verified"))

        // Another CA: the upstream's certificate does not chain to it.
        (output, gatewayLog) = try await through([
            "--upstream-ca", certificates.certificate, "--upstream-server-name", "pop.example.test",
        ])
        #expect(!output.contains("Hello"))
        #expect(
            gatewayLog.contains(
                "the connection to the upstream 127.0.0.1:\(dovecot.port) failed: the certificate is not trusted"
            ),
            "\(gatewayLog)"
        )
        // The right CA, the wrong name.
        (output, gatewayLog) = try await through([
            "--upstream-ca", upstreamCertificate, "--upstream-server-name", "mail.other.test",
        ])
        #expect(!output.contains("Hello"))
        #expect(gatewayLog.contains("the connection to the upstream 127.0.0.1:\(dovecot.port) failed"), "\(gatewayLog)")
        #expect(gatewayLog.contains("mail.other.test"), "the log names the name that did not match: \(gatewayLog)")
        // The opt-out: it works, and says what it costs.
        (output, gatewayLog) = try await through(["--upstream-no-verify"])
        #expect(output.contains("Hello through the gateway."), "\(output)")
        #expect(gatewayLog.contains("is NOT verified (upstream-no-verify)"))

        // An IP literal with verification on needs the name to check.
        let process = try ServeProcessTests.serve(
            ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(dovecot.port)", "--upstream-tls", "implicit"],
            log: log
        )
        #expect(await process.wait(seconds: 10) == 2)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("needs upstream-server-name"))
        await dovecot.stop()
    }

    @Test("STLS to a Dovecot that offers it: curl logs in through the gateway; the client is offered no STLS")
    func starttlsUpstream() async throws {
        let certificates = try await TestCertificates.make()
        let upstreamCertificate = try await certificates.named("pop.example.test")
        let dovecot = try Dovecot(
            messages: [ServeTLSTests.message],
            tls: .stls(certificate: upstreamCertificate, key: certificates.key)
        )
        let log = ServeProcessTests.temporary("upstream-stls-log")
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            [
                "--upstream", "127.0.0.1:\(dovecot.port)", "--upstream-tls", "starttls", "--upstream-ca",
                upstreamCertificate, "--upstream-server-name", "pop.example.test", "--live",
            ],
            log: log
        )
        let curl = try await runShell("curl -s -S --max-time 10 pop3://alice:wonderland@127.0.0.1:\(port)/1")
        #expect(
            curl.contains("Hello through the gateway."),
            "\(curl)\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")\n\(dovecot.logTail())"
        )
        let script = """
            import poplib
            p = poplib.POP3('127.0.0.1', \(port), timeout=10)
            print('STLS' in p.capa()); p.quit()
            """
        #expect(
            try await runTool("python3", ["-c", script]).trimmingCharacters(in: .whitespacesAndNewlines) == "False"
        )
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        let gatewayLog = try String(contentsOfFile: log, encoding: .utf8)
        #expect(gatewayLog.contains("The gateway began TLS 1.3 with the upstream (STLS)"), "\(gatewayLog)")
        #expect(!gatewayLog.contains("C: STLS"), "the gateway's STLS is not shown as the client's")
        await dovecot.stop()
    }

    @Test("a TLS 1.0-only upstream: reached with the floor lowered for it, refused without, the reason logged")
    func oldUpstream() async throws {
        let certificates = try await TestCertificates.make()
        let log = ServeProcessTests.temporary("upstream-tls10-log")
        let serverLog = ServeProcessTests.temporary("upstream-tls10-server")
        defer {
            certificates.remove()
            for path in [log, serverLog] { try? FileManager.default.removeItem(atPath: path) }
        }
        // A legacy server: TLS 1.0 and nothing newer, at OpenSSL's security level 0; it greets and says +OK.
        let server = """
            import socket, ssl, threading, warnings
            warnings.simplefilter('ignore')
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.set_ciphers('DEFAULT@SECLEVEL=0')
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1
            context.load_cert_chain('\(certificates.certificate)', '\(certificates.key)')
            listener = socket.create_server(('127.0.0.1', 0)); print(listener.getsockname()[1], flush=True)
            def serve(raw):
                try:
                    s = context.wrap_socket(raw, server_side=True); s.sendall(b'+OK legacy ready\\r\\n')
                    while s.recv(4096): s.sendall(b'+OK\\r\\n')
                except Exception:
                    pass
            while True:
                threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
            """
        let legacy = try ChildProcess("/usr/bin/python3", ["-c", server], output: serverLog)
        defer { legacy.signal(SIGKILL) }
        var legacyPort = 0
        for _ in 0..<250 where legacyPort == 0 {
            legacyPort =
                Int(((try? String(contentsOfFile: serverLog, encoding: .utf8)) ?? "").prefix { $0.isNumber }) ?? 0
            try await Task.sleep(for: .milliseconds(20))
        }
        try #require(legacyPort > 0)
        func greeting(_ extra: [String]) async throws -> String {
            let (process, port) = try await ServeProcessTests.serveOnAnyPort(
                [
                    "--upstream", "127.0.0.1:\(legacyPort)", "--upstream-tls", "implicit", "--upstream-ca",
                    certificates.certificate, "--upstream-server-name", "localhost",
                ] + extra,
                log: log
            )
            let client = try RawSocket(port: port)
            let answer = await client.readUntil("\r\n", seconds: 10)
            client.close()
            process.signal(SIGTERM)
            #expect(await process.wait(seconds: 10) == 0)
            return answer
        }
        #expect(try await greeting(["--upstream-tls-min-version", "1.0"]).hasPrefix("+OK legacy ready"))
        let refused = try await greeting([])
        #expect(refused.hasPrefix("-ERR [SYS/TEMP] the gateway could not make a secure connection"), "\(refused)")
        #expect(
            try String(contentsOfFile: log, encoding: .utf8).contains(
                "the connection to the upstream 127.0.0.1:\(legacyPort) failed"
            )
        )
    }
}
