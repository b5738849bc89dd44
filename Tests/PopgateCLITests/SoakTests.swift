import Foundation
import NIOConcurrencyHelpers
import NIOCore
import POP3NIO
import PopgateTestSupport
import Testing

/// The fault and soak suite: `popgate serve` (transcripts and pcap on) in front of Dovecot, under a steady load
/// of clients that finish cleanly, delete and QUIT, or vanish at random points, while Dovecot's session processes
/// are killed once and later the whole server is stopped and started again on its port. Afterwards every maildrop holds what only the QUITs removed, the gateway's memory and
/// descriptors did not grow with the sessions, and no output holds a password the suite used.
///
/// A quick run (15 s) is part of the normal tests; `POPGATE_SOAK_MINUTES=30 swift test --filter SoakTests` is the
/// long one, sampling each minute.
@Suite("Fault and soak", .timeLimit(.minutes(60)))
struct SoakTests {
    static let minutes = ProcessInfo.processInfo.environment["POPGATE_SOAK_MINUTES"].flatMap(Double.init) ?? 0.25

    /// A user's maildrop as the suite expects it: deletions committed by a QUIT that was answered come off; one
    /// whose QUIT met the upstream's death may or may not have been committed.
    struct Expected {
        var most = 6
        var least = 6
    }

    enum Ending: CaseIterable {
        case clean, deleteAndQuit, afterUser, afterPass, afterDele, midRetr, reset, saslThenDrop
    }

    @Test(
        "clients that vanish anywhere, the upstream killed and restarted under load: maildrops intact, memory flat, no password"
    )
    func soak() async throws {
        let run = UInt32.random(in: 0..<UInt32.max)
        let users = (0..<6).map { ("soak\($0)", "soak-pw-\(run)-\($0)") }
        let message = Array(("Subject: soak\r\n\r\n" + String(repeating: "0123456789abcdef\r\n", count: 600)).utf8)
        let dovecot = try Dovecot(
            users: Dictionary(uniqueKeysWithValues: users),
            messages: Array(repeating: message, count: 6)
        )
        let outputs = ServeProcessTests.temporary("soak")
        let log = outputs + ".log"
        try FileManager.default.createDirectory(atPath: outputs, withIntermediateDirectories: true)
        let (process, port) = try await ServeProcessTests.serveOnAnyPort(
            [
                "--upstream", "127.0.0.1:\(dovecot.port)", "--transcripts", outputs + "/transcripts", "--pcap",
                outputs + "/pcap", "--log-level", "debug",
            ],
            log: log
        )
        defer {
            try? FileManager.default.removeItem(atPath: outputs)
            try? FileManager.default.removeItem(atPath: log)
        }
        let expected = NIOLockedValueBox(Dictionary(uniqueKeysWithValues: users.map { ($0.0, Expected()) }))
        let sessions = NIOLockedValueBox([String: Int]())
        let deadline = ContinuousClock.now + .seconds(Self.minutes * 60)
        let sampleEvery = Duration.seconds(max(1, Self.minutes * 60 / 15))
        var samples: [(resident: Int, descriptors: Int)] = []
        func descriptors() -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.pid)/fd").count) ?? 0
        }
        func sample() { samples.append((residentBytes(of: process.pid) ?? 0, descriptors())) }
        sample()
        let baseDescriptors = samples[0].descriptors
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (user, password) in users {
                group.addTask {
                    while ContinuousClock.now < deadline {
                        let ending = Ending.allCases.randomElement()!
                        let outcome = await Self.session(port: port, user: user, password: password, ending: ending)
                        sessions.withLockedValue { $0["\(ending) \(outcome)", default: 0] += 1 }
                        expected.withLockedValue { table in
                            switch outcome {
                            case .committed:
                                table[user]!.most -= 1
                                table[user]!.least -= 1
                            case .maybeCommitted: table[user]!.least -= 1
                            case .nothing: break
                            }
                        }
                    }
                }
            }
            // The upstream's session processes killed once, half-way; at three quarters the whole server is
            // stopped and started again on its port.
            group.addTask {
                try await Task.sleep(until: deadline - .seconds(Self.minutes * 30))
                let killed = dovecot.killSessions()
                sessions.withLockedValue { $0["upstream sessions killed", default: 0] += killed }
                try await Task.sleep(until: deadline - .seconds(Self.minutes * 15))
                try await dovecot.restart()
                sessions.withLockedValue { $0["upstream restarted", default: 0] += 1 }
            }
            while ContinuousClock.now < deadline {
                try await Task.sleep(for: sampleEvery)
                sample()
            }
            try await group.waitForAll()
        }
        #expect(sessions.withLockedValue { $0["upstream restarted"] } == 1)
        // After the restart the gateway serves again, by itself: each user logs in and reads its maildrop.
        for (user, password) in users {
            try await POP3Client.withSession(host: "127.0.0.1", port: port) { (s: inout POP3Client.Session) in
                _ = try await s.send("USER \(user)")
                #expect(try await s.send("PASS \(password)").isOK)
                #expect(try await s.send("STAT").isOK)
                #expect(try await s.send("QUIT").isOK)
            }
        }
        // Every session has ended: the gateway holds its listener, its logs, nothing per session.
        for _ in 0..<100 where descriptors() > baseDescriptors + 4 {
            try await Task.sleep(for: .milliseconds(100))
        }
        sample()
        print(
            "soak: \(Self.minutes) min; sessions by ending: \(sessions.withLockedValue { $0 }.sorted { $0.key < $1.key })"
        )
        print("soak: resident MiB, descriptors: \(samples.map { "\($0.resident >> 20)/\($0.descriptors)" })")
        // Maildrops: only what answered QUITs removed (or, for a QUIT the upstream's death met, maybe that too).
        for (user, _) in users {
            let count = dovecot.messageCount(user)
            let want = expected.withLockedValue { $0[user]! }
            #expect(count >= want.least && count <= want.most, "\(user): \(count) messages, expected \(want)")
        }
        // Flat: no session's memory or descriptors stay once it has ended.
        #expect(samples.last!.descriptors <= baseDescriptors + 4, "\(samples.map(\.descriptors))")
        let warm = samples.dropFirst(samples.count / 3).map(\.resident)
        #expect(warm.max()! <= warm.first! + warm.first! / 2 + (8 << 20), "\(samples.map(\.resident))")
        // No password in any output: transcripts, pcap files, the log; nor PLAIN's base64 of it.
        let secrets = users.flatMap { user, password in
            [Array(password.utf8), Array(Data("\0\(user)\0\(password)".utf8).base64EncodedString().utf8)]
        }
        var files = [log]
        if let walk = FileManager.default.enumerator(atPath: outputs) {
            for case let path as String in walk { files.append(outputs + "/" + path) }
        }
        var searched = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            searched += 1
            for secret in secrets {
                #expect(data.range(of: Data(secret)) == nil, "\(file) holds a password")
            }
        }
        #expect(searched > 10)
        process.signal(SIGTERM)
        #expect(await process.wait(seconds: 20) == 0)
        await dovecot.stop()
    }

    enum Outcome: CustomStringConvertible {
        case nothing, committed, maybeCommitted
        var description: String {
            switch self {
            case .nothing: "nothing committed"
            case .committed: "committed"
            case .maybeCommitted: "maybe committed"
            }
        }
    }

    /// One client session through the gateway, ended as `ending` says; what it did to the maildrop.
    static func session(port: Int, user: String, password: String, ending: Ending) async -> Outcome {
        if ending == .reset {
            guard let socket = try? RawSocket(port: port) else { return .nothing }
            socket.send("USER \(user)\r\nPASS \(password)\r\nDELE 1\r\nRETR 2\r\n")
            _ = await socket.readUntil("+OK", seconds: 2)
            socket.reset()
            return .nothing
        }
        var quitSent = false
        do {
            return try await POP3Client.withSession(host: "127.0.0.1", port: port) {
                (s: inout POP3Client.Session) async throws -> Outcome in
                if ending == .saslThenDrop {
                    let plain = Data("\0\(user)\0\(password)".utf8).base64EncodedString()
                    _ = try await s.send("AUTH PLAIN \(plain)")
                    _ = try await s.send("DELE 1")
                    return .nothing
                }
                _ = try await s.send("USER \(user)")
                if ending == .afterUser { return .nothing }
                guard try await s.send("PASS \(password)").isOK else { return .nothing }
                if ending == .afterPass { return .nothing }
                switch ending {
                case .clean:
                    _ = try await s.send("STAT")
                    _ = try await s.send("RETR 1")
                    _ = try await s.send("QUIT")
                    return .nothing
                case .deleteAndQuit:
                    // Never below two: the others need a message to read.
                    let stat = try await s.send("STAT").firstLine.split(separator: " ")
                    guard stat.count > 1, let count = Int(stat[1]), count > 2 else {
                        _ = try await s.send("QUIT")
                        return .nothing
                    }
                    guard try await s.send("DELE 1").isOK else { return .nothing }
                    quitSent = true
                    return try await s.send("QUIT").isOK ? .committed : .maybeCommitted
                case .afterDele:
                    _ = try await s.send("DELE 1")
                    return .nothing
                case .midRetr:
                    _ = try await s.send("DELE 2")
                    try await s.outbound.write(ByteBuffer(string: "RETR 1\r\n"))
                    _ = try await s.iterator.next()
                    return .nothing
                default:
                    return .nothing
                }
            }
        } catch {
            // The upstream's death (or the gateway's -ERR for it) ends a session early; a QUIT already sent may
            // have been committed.
            return quitSent ? .maybeCommitted : .nothing
        }
    }
}
