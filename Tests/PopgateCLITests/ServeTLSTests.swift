import Foundation
import PopgateTestSupport
import Testing

/// `popgate serve --listen-tls`: the gateway terminates TLS for clients, in front of a plaintext Dovecot.
@Suite("popgate serve with TLS for clients", .timeLimit(.minutes(3)))
struct ServeTLSTests {
    static let message = Array("Subject: over TLS\r\n\r\nHello through the gateway.\r\n".utf8)

    /// The gateway on a TLS port the kernel picks, in front of `dovecot`.
    static func serveTLS(
        _ certificates: TestCertificates,
        dovecot: Dovecot,
        extra: [String] = [],
        log: String
    ) async throws -> (ChildProcess, Int) {
        try await ServeProcessTests.serveOnAnyPort(
            [
                "--listen-tls", "127.0.0.1:0", "--cert", certificates.certificate, "--key", certificates.key,
                "--upstream", "127.0.0.1:\(dovecot.port)",
            ] + extra,
            log: log,
            listen: false
        )
    }

    @Test("curl pop3s:// and poplib's POP3_SSL read the message through the gateway; the transcript names TLS 1.3")
    func realClients() async throws {
        let certificates = try await TestCertificates.make()
        let dovecot = try Dovecot(messages: [Self.message])
        let log = ServeProcessTests.temporary("tls-log")
        let transcripts = ServeProcessTests.temporary("tls-transcripts")
        defer {
            certificates.remove()
            for path in [log, transcripts] { try? FileManager.default.removeItem(atPath: path) }
        }
        let (process, port) = try await Self.serveTLS(
            certificates,
            dovecot: dovecot,
            extra: ["--transcripts", transcripts],
            log: log
        )
        let curl = try await runTool(
            "curl",
            [
                "-s", "--max-time", "10", "--cacert", certificates.certificate,
                "pop3s://alice:wonderland@127.0.0.1:\(port)/1",
            ]
        )
        #expect(curl.contains("Hello through the gateway."), "\(curl)")
        let script = """
            import poplib, ssl
            context = ssl.create_default_context(cafile='\(certificates.certificate)')
            p = poplib.POP3_SSL('127.0.0.1', \(port), context=context, timeout=10)
            p.user('alice'); p.pass_('wonderland')
            count, _ = p.stat(); lines = p.retr(1)[1]
            print(count, p.sock.version(), b'\\n'.join(lines).decode())
            p.quit()
            """
        let poplib = try await runTool("python3", ["-c", script])
        #expect(poplib.hasPrefix("1 TLSv1.3 "), "\(poplib)")
        #expect(poplib.contains("Hello through the gateway."))
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        let texts = try FileManager.default.contentsOfDirectory(atPath: transcripts).filter { $0.hasSuffix(".txt") }
        #expect(texts.count == 2)
        for file in texts {
            let text = try String(contentsOfFile: transcripts + "/" + file, encoding: .utf8)
            #expect(text.contains("TLS 1.3 with the client"), "\(text)")
            #expect(text.contains("[TLS ServerHello: TLS 1.3, cipher TLS_"), "\(text)")
            #expect(text.contains("C: RETR 1") && text.contains("the client quit"))
            #expect(!text.contains("wonderland"))
        }
    }

    @Test("TLS 1.1 is refused by default and taken when the floor is lowered to it")
    func versionFloor() async throws {
        let certificates = try await TestCertificates.make()
        let dovecot = try Dovecot(messages: [Self.message])
        let log = ServeProcessTests.temporary("tls-floor-log")
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        // This OpenSSL will not speak TLS 1.1 at its default security level; level 0 lets it try.
        func tls11(_ port: Int) async throws -> String {
            try await runShell(
                "echo QUIT | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' -ign_eof"
            )
        }
        let (strict, port) = try await Self.serveTLS(certificates, dovecot: dovecot, log: log)
        let refused = try await tls11(port)
        #expect(refused.contains("alert protocol version"), "\(refused)")
        #expect(!refused.contains("+OK"))
        strict.signal(SIGTERM)
        #expect(await strict.wait(seconds: 10) == 0)
        let gatewayLog = try String(contentsOfFile: log, encoding: .utf8)
        #expect(gatewayLog.contains("TLS handshake with the client failed: the client offered only TLS versions older"))
        #expect(gatewayLog.contains("session ended: the TLS handshake with the client failed"))

        // The positive control: the same client, the floor at 1.1.
        let (lenient, lenientPort) = try await Self.serveTLS(
            certificates,
            dovecot: dovecot,
            extra: ["--tls-min-version", "1.1"],
            log: log
        )
        let taken = try await tls11(lenientPort)
        #expect(taken.contains("Protocol  : TLSv1.1"), "\(taken)")
        #expect(taken.contains("+OK"), "\(taken)")
        lenient.signal(SIGTERM)
        #expect(await lenient.wait(seconds: 10) == 0)
        await dovecot.stop()
    }

    @Test(
        "garbage, a stalled handshake and plaintext on the TLS port each end cleanly; a real client meanwhile is served"
    )
    func faults() async throws {
        let certificates = try await TestCertificates.make()
        let dovecot = try Dovecot(messages: [Self.message])
        let log = ServeProcessTests.temporary("tls-faults-log")
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        let (process, port) = try await Self.serveTLS(
            certificates,
            dovecot: dovecot,
            extra: ["--handshake-timeout", "1"],
            log: log
        )
        let staller = try RawSocket(port: port)
        let started = ContinuousClock.now
        let garbage = try RawSocket(port: port)
        garbage.sendBytes(Array(repeating: 0x41, count: 300))
        let plaintext = try RawSocket(port: port)
        plaintext.send("USER alice\r\n")
        // Closed with at most a TLS alert record: a TLS port has nothing to say in plaintext.
        for client in [garbage, plaintext] {
            let answer = Array(await client.readAll(seconds: 5).utf8)
            #expect(answer.isEmpty || answer.first == 0x15, "\(answer)")
        }
        #expect(ContinuousClock.now - started < .seconds(1))
        let curl = try await runTool(
            "curl",
            [
                "-s", "--max-time", "10", "--cacert", certificates.certificate,
                "pop3s://alice:wonderland@127.0.0.1:\(port)/1",
            ]
        )
        #expect(curl.contains("Hello through the gateway."))
        #expect(await staller.readAll(seconds: 5) == "")
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(900) && waited < .seconds(4), "\(waited)")
        for client in [staller, garbage, plaintext] { client.close() }
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
        let gatewayLog = try String(contentsOfFile: log, encoding: .utf8)
        #expect(gatewayLog.components(separatedBy: "what the client sent is not TLS").count - 1 == 2, "\(gatewayLog)")
        #expect(gatewayLog.contains("session ended: the client did not finish its TLS handshake in time"))
        #expect(gatewayLog.contains("session ended: the client quit"))
    }

    @Test("certificate problems stop the start with exit code 2 and name the file; a DER key loads")
    func startupProblems() async throws {
        let certificates = try await TestCertificates.make()
        defer { certificates.remove() }
        let log = ServeProcessTests.temporary("tls-start-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        func start(_ cert: String, _ key: String, _ extra: [String] = []) async throws -> (Int32?, String) {
            let process = try ServeProcessTests.serve(
                ["--listen-tls", "127.0.0.1:0", "--cert", cert, "--key", key, "--upstream", "127.0.0.1:1"] + extra,
                log: log
            )
            let status = await process.wait(seconds: 10)
            return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        }
        let missing = certificates.directory + "/missing.pem"
        var (status, message) = try await start(missing, certificates.key)
        #expect(status == 2 && message.contains("\(missing): the certificate file does not exist"), "\(message)")
        (status, message) = try await start(certificates.expired, certificates.key)
        #expect(status == 2 && message.contains("\(certificates.expired): the certificate expired on 2020-01-02"))
        (status, message) = try await start(certificates.certificate, certificates.otherKey)
        #expect(status == 2 && message.contains("\(certificates.otherKey): the key does not belong to the certificate"))
        (status, message) = try await start(certificates.key, certificates.key)
        #expect(status == 2 && message.contains("\(certificates.key): not a PEM certificate chain"), "\(message)")
        let noKey = try ServeProcessTests.serve(
            ["--listen-tls", "127.0.0.1:0", "--cert", certificates.certificate, "--upstream", "127.0.0.1:1"],
            log: log
        )
        #expect(await noKey.wait(seconds: 10) == 2)
        #expect(try String(contentsOfFile: log, encoding: .utf8).contains("a certificate needs its key"))

        // A DER key and a certificate that expires within the week: it starts, and says when it expires.
        let process = try ServeProcessTests.serve(
            [
                "--listen-tls", "127.0.0.1:0", "--cert", certificates.expiringSoon, "--key", certificates.keyDER,
                "--upstream", "127.0.0.1:1",
            ],
            log: log
        )
        #expect(try await ServeProcessTests.waitForLog(log, "(TLS), relaying to"))
        let started = try String(contentsOfFile: log, encoding: .utf8)
        #expect(started.contains("the certificate in \(certificates.expiringSoon) expires in 5 days"), "\(started)")
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
    }
}
