import Foundation
import PopgateTestSupport
import Testing

/// `popgate serve --listen-tls`: the gateway terminates TLS for clients, in front of a plaintext Dovecot.
@Suite("popgate serve with TLS for clients", .timeLimit(.minutes(3)))
struct ServeTLSTests {
    static let message = Array("Subject: over TLS\r\n\r\nHello through the gateway.\r\n".utf8)

    /// Certificates, a plaintext Dovecot, and the gateway in front of it on a port the kernel picks: a TLS port,
    /// or (`stls`) a plaintext one where the gateway answers STLS.
    struct Stack {
        let certificates: TestCertificates
        let dovecot: Dovecot
        let log = ServeProcessTests.temporary("tls-log")
        let transcripts = ServeProcessTests.temporary("tls-transcripts")
        var process: ChildProcess?
        var port = 0

        static func start(stls: Bool = false, _ extra: [String] = []) async throws -> Stack {
            var stack = Stack(
                certificates: try await TestCertificates.make(),
                dovecot: try Dovecot(messages: [message])
            )
            try await stack.serve(stls: stls, extra)
            return stack
        }

        mutating func serve(stls: Bool = false, _ extra: [String] = []) async throws {
            (self.process, self.port) = try await ServeProcessTests.serveOnAnyPort(
                (stls ? ["--listen", "127.0.0.1:0"] : ["--listen-tls", "127.0.0.1:0"])
                    + [
                        "--cert", self.certificates.certificate, "--key", self.certificates.key, "--upstream",
                        "127.0.0.1:\(self.dovecot.port)", "--transcripts", self.transcripts,
                    ] + extra,
                log: self.log,
                listen: false
            )
        }

        /// Stops the gateway (exit 0 expected) and returns the transcripts' text files.
        func stopGateway() async throws -> [String] {
            self.process?.signal(SIGTERM)
            #expect(await self.process?.wait(seconds: 10) == 0)
            let files = (try? FileManager.default.contentsOfDirectory(atPath: self.transcripts)) ?? []
            return try files.filter { $0.hasSuffix(".txt") }.sorted().map {
                try String(contentsOfFile: self.transcripts + "/" + $0, encoding: .utf8)
            }
        }

        var gatewayLog: String { (try? String(contentsOfFile: self.log, encoding: .utf8)) ?? "" }

        func remove() async {
            await self.dovecot.stop()
            self.certificates.remove()
            for path in [self.log, self.transcripts] { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    static func exports(_ directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).map { directory + "/" + $0 }
    }

    /// The commands tshark reads in a pcap export, once it is checked that no password is in it.
    static func exportedCommands(_ path: String, port: Int) async throws -> [String] {
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
        #expect(!text.contains("wonderland"), "\(path) holds the password")
        let fields = try await runTool(
            "tshark",
            [
                "-r", path, "-d", "tcp.port==\(port),pop", "-Y", "pop.request", "-T", "fields", "-e",
                "pop.request.command",
            ]
        )
        return fields.split(separator: "\n").map { $0.uppercased() }
    }

    @Test("curl pop3s:// and poplib's POP3_SSL read the message through the gateway; the transcript names TLS 1.3")
    func realClients() async throws {
        let pcap = ServeProcessTests.temporary("tls-pcap")
        defer { try? FileManager.default.removeItem(atPath: pcap) }
        let stack = try await Stack.start(["--pcap", pcap])
        let (certificates, port) = (stack.certificates, stack.port)
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
        let texts = try await stack.stopGateway()
        let gatewayLog = stack.gatewayLog
        await stack.remove()
        // A normal close after QUIT inside TLS is nothing to warn about.
        #expect(!gatewayLog.contains(" warning ") && !gatewayLog.contains(" error "), "\(gatewayLog)")
        #expect(texts.count == 2)
        for text in texts {
            #expect(text.contains("TLS 1.3 with the client"), "\(text)")
            #expect(text.contains("[TLS ServerHello: TLS 1.3, cipher TLS_"), "\(text)")
            #expect(text.contains("C: RETR 1") && text.contains("the client quit"))
            #expect(!text.contains("wonderland"))
        }
        // The export holds what went inside TLS, in plaintext, the password masked; tshark reads it as POP3.
        for path in try Self.exports(pcap) {
            let commands = try await Self.exportedCommands(path, port: port)
            #expect(commands.contains("RETR"), "\(commands)")
        }
    }

    @Test("TLS 1.1 is refused by default and taken when the floor is lowered to it")
    func versionFloor() async throws {
        var stack = try await Stack.start()
        // This OpenSSL will not speak TLS 1.1 at its default security level; level 0 lets it try.
        func tls11(_ port: Int) async throws -> String {
            try await runShell(
                "echo QUIT | timeout 10 openssl s_client -connect 127.0.0.1:\(port) -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' -ign_eof"
            )
        }
        let refused = try await tls11(stack.port)
        #expect(refused.contains("alert protocol version"), "\(refused)")
        #expect(!refused.contains("+OK"))
        _ = try await stack.stopGateway()
        let gatewayLog = stack.gatewayLog
        #expect(gatewayLog.contains("TLS handshake with the client failed: the client offered only TLS versions older"))
        #expect(gatewayLog.contains("session ended: the TLS handshake with the client failed"))

        // The positive control: the same client, the floor at 1.1.
        try await stack.serve(["--tls-min-version", "1.1"])
        let taken = try await tls11(stack.port)
        #expect(taken.contains("Protocol  : TLSv1.1"), "\(taken)")
        #expect(taken.contains("+OK"), "\(taken)")
        _ = try await stack.stopGateway()
        await stack.remove()
    }

    @Test("a client that rejects the gateway's certificate ends the handshake: the client's alert, said as such")
    func clientRejectsCertificate() async throws {
        let stack = try await Stack.start()
        // TLS 1.2, so that the client's fatal alert is sent in clear; no CA given, so the self-signed
        // certificate is not trusted.
        let output = try await runShell(
            "echo QUIT | timeout 10 openssl s_client -connect 127.0.0.1:\(stack.port) -tls1_2 -verify_return_error"
        )
        #expect(!output.contains("+OK"), "\(output)")
        #expect(
            try await ServeProcessTests.waitForLog(stack.log, "TLS handshake with the client failed: the peer ended")
        )
        _ = try await stack.stopGateway()
        let log = stack.gatewayLog
        await stack.remove()
        #expect(log.contains("fatal alert") && log.contains("does not trust the certificate"), "\(log)")
        #expect(!log.contains("warning"), "the client's choice is not a warning: \(log)")
        #expect(log.contains("session ended: the TLS handshake with the client failed"))
    }

    @Test(
        "garbage, a stalled handshake and plaintext on the TLS port each end cleanly; a real client meanwhile is served"
    )
    func faults() async throws {
        let stack = try await Stack.start(["--handshake-timeout", "6"])
        let (certificates, port) = (stack.certificates, stack.port)
        let staller = try RawSocket(port: port)
        let started = ContinuousClock.now
        let garbage = try RawSocket(port: port)
        garbage.sendBytes(Array(repeating: 0x41, count: 300))
        let plaintext = try RawSocket(port: port)
        plaintext.send("USER alice\r\n")
        // Closed with at most a TLS alert record: a TLS port has nothing to say in plaintext. Both read at once,
        // each close timed on its reading thread.
        async let garbageRead = garbage.readAllTimed(seconds: 5)
        async let plaintextRead = plaintext.readAllTimed(seconds: 5)
        for (name, read) in [("garbage", await garbageRead), ("plaintext", await plaintextRead)] {
            let answer = Array(read.text.utf8)
            #expect(answer.isEmpty || answer.first == 0x15, "\(name): \(answer)")
            // At once, not at the handshake time (6 s; the margin is for a loaded machine).
            #expect(read.ended - started < .milliseconds(4500), "\(name) closed after \(read.ended - started)")
        }
        let curl = try await runTool(
            "curl",
            [
                "-s", "--max-time", "10", "--cacert", certificates.certificate,
                "pop3s://alice:wonderland@127.0.0.1:\(port)/1",
            ]
        )
        #expect(curl.contains("Hello through the gateway."))
        #expect(await staller.readAll(seconds: 8) == "")
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(5900) && waited < .seconds(11), "\(waited)")
        for client in [staller, garbage, plaintext] { client.close() }
        _ = try await stack.stopGateway()
        let gatewayLog = stack.gatewayLog
        await stack.remove()
        #expect(gatewayLog.components(separatedBy: "what the client sent is not TLS").count - 1 == 2, "\(gatewayLog)")
        #expect(gatewayLog.contains("session ended: the client did not finish its TLS handshake in time"))
        #expect(gatewayLog.contains("session ended: the client quit"))
    }

    @Test("ALPN: http/1.1 alone is refused with no_application_protocol (ALPACA), pop3 or no ALPN is served")
    func alpaca() async throws {
        let stack = try await Stack.start()
        func handshake(_ alpn: String?) async throws -> String {
            try await runShell(
                "(sleep 1; echo QUIT) | timeout 10 openssl s_client -connect 127.0.0.1:\(stack.port) -ign_eof"
                    + (alpn.map { " -alpn \($0)" } ?? "")
            )
        }
        let refused = try await handshake("http/1.1")
        #expect(refused.contains("no application protocol"), "\(refused)")
        #expect(!refused.contains("+OK"))
        for alpn in ["pop3", "h2,pop3", nil] {
            let served = try await handshake(alpn)
            #expect(served.contains("+OK") && served.contains("TLSv1.3"), "\(alpn ?? "none"): \(served)")
        }
        _ = try await stack.stopGateway()
        #expect(stack.gatewayLog.contains("refusing a TLS client whose ALPN offers http/1.1, not pop3"))
        #expect(stack.gatewayLog.contains("session ended: the client's ALPN did not offer pop3"))
        await stack.remove()
    }

    @Test("SIGHUP reads a renewed certificate for new handshakes; open TLS sessions go on; a bad pair changes nothing")
    func certificateReload() async throws {
        let certificates = try await TestCertificates.make()
        let dovecot = try Dovecot(messages: [Self.message])
        let live = certificates.directory + "/live.pem"
        let config = certificates.directory + "/popgate.yaml"
        let log = ServeProcessTests.temporary("tls-reload-log")
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        try FileManager.default.copyItem(atPath: certificates.certificate, toPath: live)
        try """
        listen-tls: 127.0.0.1:0
        cert: \(live)
        key: \(certificates.key)
        upstream: 127.0.0.1:\(dovecot.port)
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(["--config", config], log: log, listen: false)
        /// The end of validity of the certificate a new handshake is shown.
        func presented() async throws -> String {
            let output = try await runShell(
                "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port) 2>/dev/null | openssl x509 -noout -enddate"
            )
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func enddate(_ path: String) async throws -> String {
            try await runTool("openssl", ["x509", "-in", path, "-noout", "-enddate"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let first = try await enddate(certificates.certificate)
        let renewed = try await enddate(certificates.expiringSoon)
        #expect(try await presented() == first)
        // A session open across the reloads, logged in over the first certificate.
        let script = """
            import poplib, ssl, os, time
            context = ssl._create_unverified_context()
            p = poplib.POP3_SSL('127.0.0.1', \(port), context=context, timeout=20)
            p.user('alice'); p.pass_('wonderland'); print('in', flush=True)
            while not os.path.exists('\(certificates.directory)/go'): time.sleep(0.05)
            print(p.stat()[0], p.quit().decode())
            """
        let session = try ChildProcess("/usr/bin/python3", ["-c", script], output: log + ".session")
        defer { try? FileManager.default.removeItem(atPath: log + ".session") }
        #expect(try await ServeProcessTests.waitForLog(log + ".session", "in"))

        // Renewed in place, as certbot does: new handshakes get it.
        try FileManager.default.removeItem(atPath: live)
        try FileManager.default.copyItem(atPath: certificates.expiringSoon, toPath: live)
        process.signal(SIGHUP)
        #expect(try await ServeProcessTests.waitForLog(log, "reloaded the configuration"))
        #expect(try await presented() == renewed)
        // A pair that does not load: logged, and the renewed one stays.
        try FileManager.default.removeItem(atPath: live)
        try FileManager.default.copyItem(atPath: certificates.expired, toPath: live)
        process.signal(SIGHUP)
        #expect(try await ServeProcessTests.waitForLog(log, "reload failed, the configuration in force is kept"))
        #expect(
            try String(contentsOfFile: log, encoding: .utf8).contains("\(live): the certificate expired on 2020-01-02")
        )
        #expect(try await presented() == renewed)

        #expect(FileManager.default.createFile(atPath: certificates.directory + "/go", contents: Data()))
        #expect(await session.wait(seconds: 10) == 0)
        #expect(try String(contentsOfFile: log + ".session", encoding: .utf8).contains("1 +OK"))
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 10) == 0)
        await dovecot.stop()
    }

    @Test(
        "certificates by server name: each name gets its own, a wildcard covers one label, others the default; strict refuses"
    )
    func certificatesByName() async throws {
        var stack = try await Stack.start()
        let pop = try await stack.certificates.named("pop.example.test")
        let wild = try await stack.certificates.named("*.mail.example.test")
        let sni = [
            "--sni", "pop.example.test,pop2.example.test=\(pop):\(stack.certificates.key)",
            "--sni", "*.mail.example.test=\(wild):\(stack.certificates.key)",
        ]
        _ = try await stack.stopGateway()
        try await stack.serve(sni)
        func subject(_ name: String?) async throws -> String {
            let output = try await runShell(
                "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(stack.port)"
                    + (name.map { " -servername \($0)" } ?? " -noservername")
                    + " 2>/dev/null | openssl x509 -noout -subject"
            )
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try await subject("pop.example.test") == "subject=CN = pop.example.test")
        #expect(try await subject("POP2.example.test") == "subject=CN = pop.example.test")
        #expect(try await subject("a.mail.example.test") == "subject=CN = *.mail.example.test")
        #expect(try await subject("b.a.mail.example.test") == "subject=CN = localhost")
        #expect(try await subject("other.test") == "subject=CN = localhost")
        #expect(try await subject(nil) == "subject=CN = localhost")
        _ = try await stack.stopGateway()

        try await stack.serve(sni + ["--sni-strict"])
        #expect(try await subject("pop.example.test") == "subject=CN = pop.example.test")
        #expect(try await subject(nil) == "subject=CN = localhost")
        let refused = try await runShell(
            "echo | timeout 10 openssl s_client -connect 127.0.0.1:\(stack.port) -servername other.test"
        )
        #expect(refused.contains("alert") && !refused.contains("+OK"), "\(refused)")
        _ = try await stack.stopGateway()
        await stack.remove()
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

    // MARK: - STLS, answered by the gateway

    @Test("STLS through the gateway to a Dovecot without TLS: poplib's stls(), curl --ssl-reqd, openssl -starttls")
    func stlsWithRealClients() async throws {
        let pcap = ServeProcessTests.temporary("stls-pcap")
        defer { try? FileManager.default.removeItem(atPath: pcap) }
        let stack = try await Stack.start(stls: true, ["--pcap", pcap])
        let (certificates, port) = (stack.certificates, stack.port)
        let script = """
            import poplib, ssl
            context = ssl.create_default_context(cafile='\(certificates.certificate)')
            p = poplib.POP3('127.0.0.1', \(port), timeout=10)
            before = p.capa()
            p.stls(context)
            after = p.capa()
            p.user('alice'); p.pass_('wonderland')
            print('STLS' in before, 'STLS' in after, p.sock.version(), p.stat()[0], b'\\n'.join(p.retr(1)[1]).decode())
            p.quit()
            """
        let poplib = try await runTool("python3", ["-c", script])
        #expect(poplib.hasPrefix("True False TLSv1.3 1 "), "\(poplib)")
        #expect(poplib.contains("Hello through the gateway."))
        let curl = try await runTool(
            "curl",
            [
                "-s", "--max-time", "10", "--ssl-reqd", "--cacert", certificates.certificate,
                "pop3://alice:wonderland@127.0.0.1:\(port)/1",
            ]
        )
        #expect(curl.contains("Hello through the gateway."), "\(curl)")
        let openssl = try await runShell(
            "echo QUIT | timeout 10 openssl s_client -starttls pop3 -connect 127.0.0.1:\(port) -CAfile \(certificates.certificate) -ign_eof"
        )
        #expect(openssl.contains("Verify return code: 0 (ok)") && openssl.contains("TLSv1.3"), "\(openssl)")
        let texts = try await stack.stopGateway()
        await stack.remove()
        #expect(texts.count == 3)
        var offered = 0
        for text in texts {
            #expect(text.contains("TLS 1.3 with the client after STLS"), "\(text)")
            if text.contains("STLS added to CAPA") { offered += 1 }
            #expect(!text.contains("wonderland"))
        }
        // poplib and curl ask CAPA first; openssl sends STLS straight away.
        #expect(offered == 2)
        // The export: the STLS exchange, then a note that the plaintext inside TLS follows; the password masked.
        for path in try Self.exports(pcap) {
            let commands = try await Self.exportedCommands(path, port: port)
            #expect(commands.contains("STLS"), "\(path): \(commands)")
            let note = try await runTool("tshark", ["-r", path, "-Y", "syslog", "-T", "fields", "-e", "syslog.msg"])
            #expect(note.contains("TLS 1.3 began after STLS; what follows in this stream is the plaintext inside it"))
            let (status, inspected) = try await InspectProcessTests.inspect(["--port", "\(port)", path])
            #expect(status == 0 && !inspected.contains("! R49"), "\(inspected)")
        }
    }

    @Test("plaintext pipelined after STLS is dropped and reported (R31); the session goes on inside TLS")
    func stlsInjection() async throws {
        let stack = try await Stack.start(stls: true)
        let (certificates, port) = (stack.certificates, stack.port)
        // The +OK to STLS waits behind CAPA's listing; the injected USER came with them.
        let script = """
            import socket, ssl
            s = socket.create_connection(('127.0.0.1', \(port))); f = s.makefile('rb'); f.readline()
            s.sendall(b'CAPA\\r\\nSTLS\\r\\nUSER evil\\r\\n')
            while not f.readline().startswith(b'+OK Begin TLS'): pass
            t = ssl.create_default_context(cafile='\(certificates.certificate)').wrap_socket(s, server_hostname='localhost')
            g = t.makefile('rb')
            for line in (b'USER alice', b'PASS wonderland', b'STAT', b'QUIT'):
                t.sendall(line + b'\\r\\n'); print(g.readline().decode().strip())
            """
        let output = try await runTool("python3", ["-c", script])
        let replies = output.split(separator: "\n")
        #expect(replies.count == 4 && replies.allSatisfy { $0.hasPrefix("+OK") }, "\(output)")
        // A client that begins TLS on this plaintext port is closed; nothing of it goes upstream.
        let implicit = try await runShell("echo | timeout 10 openssl s_client -connect 127.0.0.1:\(port)")
        #expect(!implicit.contains("Cipher is TLS_"), "\(implicit)")
        #expect(
            try await ServeProcessTests.waitForLog(stack.log, "session ended: the client spoke TLS on a plaintext port")
        )
        let texts = try await stack.stopGateway()
        await stack.remove()
        let text = try #require(texts.first { $0.contains("USER alice") })
        #expect(text.contains("R31 security client: 11 octets of plaintext followed STLS before TLS began"), "\(text)")
        #expect(!text.contains("evil"), "the dropped line is counted, not shown as a command")
    }

    @Test("--require-tls: a login before STLS is refused, CAPA hides USER, and after STLS the login works")
    func requireTLS() async throws {
        let stack = try await Stack.start(stls: true, ["--require-tls"])
        let (certificates, port) = (stack.certificates, stack.port)
        let script = """
            import poplib, ssl
            p = poplib.POP3('127.0.0.1', \(port), timeout=10)
            caps = p.capa()
            try:
                p.user('alice'); refused = 'no'
            except poplib.error_proto as e:
                refused = e.args[0].decode()
            p.stls(ssl.create_default_context(cafile='\(certificates.certificate)'))
            p.user('alice'); p.pass_('wonderland')
            print('USER' in caps, 'STLS' in caps, refused, '|', p.stat()[0])
            p.quit()
            """
        let output = try await runTool("python3", ["-c", script])
        #expect(
            output.trimmingCharacters(in: .whitespacesAndNewlines)
                == "False True -ERR TLS is required here: send STLS first, or connect to the POP3S port (995) | 1",
            "\(output)"
        )
        // curl without TLS cannot log in, and says so.
        let status = try await runShell(
            "curl -s --max-time 10 pop3://alice:wonderland@127.0.0.1:\(port)/1 >/dev/null; echo curl=$?"
        )
        #expect(!status.contains("curl=0"), "\(status)")
        _ = try await stack.stopGateway()
        await stack.remove()
    }
}
