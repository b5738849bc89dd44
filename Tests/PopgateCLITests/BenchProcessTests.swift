import Foundation
import PopgateTestSupport
import Testing

/// `popgate bench` as a user runs it: against Dovecot directly and through the gateway, in plaintext, with STLS
/// answered by the gateway and with implicit TLS; each worker its own maildrop.
@Suite("popgate bench, end to end", .timeLimit(.minutes(3)))
struct BenchProcessTests {
    static let users = Dictionary(uniqueKeysWithValues: (0..<4).map { ("bench\($0)", "bench-password") })
    static let message = Array("Subject: load\r\n\r\n\(String(repeating: "line of text\r\n", count: 100))".utf8)

    static func bench(_ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let binary = try #require(popgateBinary())
        let log = ServeProcessTests.temporary("bench-out")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(binary.path, ["bench"] + arguments, output: log)
        let status = await process.wait(seconds: 60)
        return (status, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    static func report(_ output: String) throws -> [String: Any] {
        let line = try #require(output.split(separator: "\n").last { $0.hasPrefix("{") }, "\(output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test("sessions with RETR against Dovecot and through the gateway: all complete, rates and percentiles given")
    func sessions() async throws {
        let dovecot = try Dovecot(users: Self.users, messages: [Self.message])
        let log = ServeProcessTests.temporary("bench-gw")
        let (gateway, port) = try await ServeProcessTests.serveOnAnyPort(
            ["--upstream", "127.0.0.1:\(dovecot.port)"],
            log: log
        )
        defer { try? FileManager.default.removeItem(atPath: log) }
        for target in [dovecot.port, port] {
            let (status, output) = try await Self.bench(
                ["127.0.0.1:\(target)", "--concurrency", "4", "--sessions", "40", "--retr", "1", "--json"]
            )
            #expect(status == 0, "\(output)")
            let report = try Self.report(output)
            #expect(report["completed"] as? Int == 40)
            #expect(report["failed"] as? Int == 0)
            #expect((report["sessions_per_second"] as? Double ?? 0) > 0)
            let latency = try #require(report["latency_session"] as? [String: Any])
            #expect(["p50_us", "p90_us", "p99_us", "p99.9_us", "max_us"].allSatisfy { latency[$0] is Int })
            #expect((report["octets"] as? Int ?? 0) > 40 * Self.message.count)
        }
        // Every message is still there: the bench deletes nothing.
        #expect(dovecot.messageCount("bench3") == 1)
        await gateway.stop()
        await dovecot.stop()
    }

    @Test("times past a day, or not finite, are refused before anything runs (1e30 seconds stopped the process)")
    func boundedTimes() async throws {
        for (option, value) in [("--timeout", "1e30"), ("--hold", "inf"), ("--duration", "1e30"), ("--timeout", "0")] {
            let (status, output) = try await Self.bench(["127.0.0.1:1", option, value, "--sessions", "1"])
            #expect(status == 64, "\(option) \(value): exit \(String(describing: status)): \(output)")
            #expect(output.contains("at most 86400"), "\(output)")
        }
    }

    @Test("a wrong password: every session fails as PASS refused, exit 1; a closed port: connect refused")
    func failures() async throws {
        let dovecot = try Dovecot(users: Self.users)
        let (status, output) = try await Self.bench(
            ["127.0.0.1:\(dovecot.port)", "--concurrency", "2", "--sessions", "4", "--password", "wrong-one"]
        )
        #expect(status == 1, "exit 1: \(output)")
        #expect(output.contains("4  PASS refused"), "\(output)")
        #expect(!output.contains("wrong-one"), "the password is in the output")
        await dovecot.stop()
        let (closed, said) = try await Self.bench([
            "127.0.0.1:\(dovecot.port)", "--sessions", "2", "--concurrency", "1",
        ])
        #expect(closed == 1)
        #expect(said.contains("2  connect: refused"), "\(said)")
    }

    @Test("STLS answered by the gateway, implicit TLS on --listen-tls, and idle sessions held then ended")
    func tlsAndIdle() async throws {
        let dovecot = try Dovecot(users: Self.users, messages: [Self.message])
        let certificates = try await TestCertificates.make()
        let log = ServeProcessTests.temporary("bench-tls")
        let tlsPort = try Dovecot.freePort()
        let (gateway, port) = try await ServeProcessTests.serveOnAnyPort(
            [
                "--upstream", "127.0.0.1:\(dovecot.port)", "--cert", certificates.certificate, "--key",
                certificates.key, "--listen-tls", "127.0.0.1:\(tlsPort)",
            ],
            log: log
        )
        defer {
            certificates.remove()
            try? FileManager.default.removeItem(atPath: log)
        }
        let (stls, stlsOutput) = try await Self.bench(
            ["127.0.0.1:\(port)", "--tls", "starttls", "--concurrency", "2", "--sessions", "6", "--json"]
        )
        #expect(stls == 0, "\(stlsOutput)")
        #expect(try Self.report(stlsOutput)["completed"] as? Int == 6)
        let (implicit, implicitOutput) = try await Self.bench(
            [
                "127.0.0.1:\(tlsPort)", "--tls", "implicit", "--verify", "--ca", certificates.certificate,
                "--server-name", "localhost", "--concurrency", "2", "--sessions", "6", "--json",
            ]
        )
        #expect(implicit == 0, "\(implicitOutput)")
        #expect(try Self.report(implicitOutput)["completed"] as? Int == 6)
        let (idle, idleOutput) = try await Self.bench(
            ["127.0.0.1:\(port)", "--workload", "idle", "--concurrency", "4", "--hold", "1", "--json"]
        )
        #expect(idle == 0, "\(idleOutput)")
        let report = try Self.report(idleOutput)
        #expect(report["completed"] as? Int == 4)
        #expect((report["seconds"] as? Double ?? 0) >= 1)
        await gateway.stop()
        await dovecot.stop()
    }
}
