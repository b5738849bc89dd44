import Foundation
import POP3Core
import POP3NIO
import POP3Relay
import Testing

@testable import POP3Live

@Suite("the live board: bounded, lossy for slow viewers, never blocking")
struct LiveBoardTests {
    static func info(_ id: String) -> SessionInfo {
        var info = SessionInfo(id: id, client: "192.0.2.7:40000", server: "198.51.100.1:110")
        info.listener = "front"
        return info
    }

    static func command(_ text: String) -> ConversationEvent {
        .command(CommandEvent(verb: "NOOP", command: .noop, text: text, secretRange: nil, note: "NOOP does nothing"))
    }

    static let summary = SessionSummary(
        clientOctets: 10,
        serverOctets: 20,
        commands: 1,
        anomalies: 0,
        finalState: .closed,
        ending: "the client quit"
    )

    @Test("a viewer that does not read loses messages and is told how many; the session is recorded in full")
    func stalledViewer() async throws {
        var limits = LiveBoard.Limits()
        limits.viewerQueue = 8
        let board = LiveBoard(limits: limits)
        board.sessionStarted(Self.info("1"), time: 0)
        let (stream, missed) = board.subscribe(follow: "1")
        for n in 0..<100 { board.events([Self.command("NOOP \(n)")], session: Self.info("1"), time: Double(n)) }
        #expect(missed() > 80, "\(missed())")
        let records = try #require(board.transcript("1")?.records)
        #expect(records.count == 101, "the session start and every command")
        var received = 0
        for await _ in stream {
            received += 1
            if received == 8 { break }
        }
        #expect(received == 8)
    }

    @Test("records kept per session are bounded, and the count of those dropped is said")
    func boundedRecords() throws {
        var limits = LiveBoard.Limits()
        limits.recordsPerSession = 10
        let board = LiveBoard(limits: limits)
        board.sessionStarted(Self.info("1"), time: 0)
        for n in 0..<50 { board.events([Self.command("NOOP \(n)")], session: Self.info("1"), time: 1) }
        let transcript = try #require(board.transcript("1"))
        #expect(transcript.records.count == 10)
        #expect(transcript.dropped == 41)
        #expect(transcript.records.last?.contains("NOOP 49") == true)
    }

    @Test("ended sessions beyond the limit are forgotten, oldest first; open ones are kept")
    func recentSessions() {
        var limits = LiveBoard.Limits()
        limits.recentSessions = 2
        let board = LiveBoard(limits: limits)
        board.sessionStarted(Self.info("open"), time: 0)
        for n in 1...5 {
            board.sessionStarted(Self.info("\(n)"), time: Double(n))
            board.sessionEnded(Self.info("\(n)"), time: Double(n), summary: Self.summary)
        }
        #expect(board.summaries().map(\.id) == ["open", "5", "4"])
        #expect(board.transcript("1") == nil)
    }

    @Test("a line with markup and quotes is carried as a JSON string, the same text back")
    func markupStaysText() throws {
        let board = LiveBoard()
        let hostile = #"NOOP <script>alert("x")</script> \ "#
        board.sessionStarted(Self.info("1"), time: 0)
        board.events([Self.command(hostile)], session: Self.info("1"), time: 1)
        let record = try #require(board.transcript("1")?.records.last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(record.utf8)) as? [String: Any])
        #expect(object["text"] as? String == hostile)
        let summary = try #require(board.summaries().first)
        #expect(try JSONSerialization.jsonObject(with: Data(summary.json.utf8)) is [String: Any])
    }

    @Test("the user is known from USER; a state change, an anomaly and the end reach list viewers")
    func listUpdates() async throws {
        let board = LiveBoard()
        let (stream, _) = board.subscribe()
        board.sessionStarted(Self.info("1"), time: 0)
        board.events(
            [
                .command(CommandEvent(verb: "USER", command: .user("alice"), text: "USER alice", note: "")),
                .stateChanged(.transaction, note: ""),
                .anomaly(Anomaly(.arguments, .client, "NOOP takes no arguments")),
            ],
            session: Self.info("1"),
            time: 1
        )
        board.sessionEnded(Self.info("1"), time: 2, summary: Self.summary)
        board.finishViewers()
        var updates: [[String: Any]] = []
        for await message in stream where message.event == "session" {
            updates.append(
                try #require(try JSONSerialization.jsonObject(with: Data(message.data.utf8)) as? [String: Any])
            )
        }
        #expect(updates.count == 3, "the start, one update for the batch, the end: \(updates)")
        #expect(updates[1]["state"] as? String == "transaction")
        #expect(updates[1]["anomalies"] as? Int == 1)
        #expect(updates.last?["user"] as? String == "alice")
        #expect(updates.last?["anomalies"] as? Int == 0, "the end's own count, from the summary")
        #expect(updates.last?["ending"] as? String == "the client quit")
    }

    /// Runs `body` on a thread of its own and waits for it: as an event loop reports its sessions.
    static func onThread(_ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        Thread {
            body()
            done.signal()
        }.start()
        done.wait()
    }

    @Test("sessions from two event loops: one list, newest first, the recent limit over both; a viewer follows either")
    func twoLoops() async throws {
        var limits = LiveBoard.Limits()
        limits.recentSessions = 3
        let board = LiveBoard(limits: limits)
        // Thread A: sessions 1, 3, 5 end; thread B: 2, 4, 6 end, and "open" stays open.
        Self.onThread {
            for n in [1, 3, 5] {
                board.sessionStarted(Self.info("\(n)"), time: Double(n))
                board.sessionEnded(Self.info("\(n)"), time: Double(n) + 0.5, summary: Self.summary)
            }
        }
        Self.onThread {
            for n in [2, 4, 6] {
                board.sessionStarted(Self.info("\(n)"), time: Double(n))
                board.sessionEnded(Self.info("\(n)"), time: Double(n) + 0.5, summary: Self.summary)
            }
            board.sessionStarted(Self.info("open"), time: 7)
        }
        #expect(board.summaries().map(\.id) == ["open", "6", "5", "4"], "the newest three ended, of both loops")
        // A session is found from a thread it did not start on (the calls here come from the test's).
        let (stream, _) = board.subscribe(follow: "open")
        board.events([Self.command("NOOP from elsewhere")], session: Self.info("open"), time: 8)
        Self.onThread { board.events([Self.command("NOOP from its loop")], session: Self.info("open"), time: 9) }
        board.finishViewers()
        var listed: [String] = []
        var records: [String] = []
        for await message in stream {
            if message.event == "session" { listed.append(message.data) }
            if message.event == "record" { records.append(message.data) }
        }
        #expect(listed.count == 4, "the three recent ended and the open one, once each")
        #expect(records.contains { $0.contains("NOOP from elsewhere") })
        #expect(records.last?.contains("NOOP from its loop") == true)
        #expect(board.transcript("open")?.records.count == 3, "its start and both commands")
    }
}

@Suite("the gateway's metrics")
struct GatewayMetricsTests {
    @Test("labels come from a known set: an unknown verb counts as other; no user, address or line becomes a label")
    func boundedLabels() {
        let metrics = GatewayMetrics(listeners: ["front"])
        var info = SessionInfo(id: "1", client: "192.0.2.7:40000", server: "198.51.100.1:110")
        info.listener = "front"
        metrics.sessionStarted(info, time: 0)
        metrics.events(
            [
                .command(CommandEvent(verb: "USER", command: .user("alice"), text: "USER alice", note: "")),
                .command(
                    CommandEvent(
                        verb: "XYZZY",
                        command: .other(keyword: "XYZZY", arguments: []),
                        text: "XYZZY",
                        note: ""
                    )
                ),
                .anomaly(Anomaly(.arguments, .client, "NOOP takes no arguments")),
            ],
            session: info,
            time: 1
        )
        metrics.refused(listener: "front", rule: "gateway.rules:3")
        metrics.tlsHandshake(listener: "front", upstream: false, succeeded: false)
        metrics.sessionEnded(
            info,
            time: 2,
            summary: SessionSummary(
                clientOctets: 10,
                serverOctets: 20,
                commands: 2,
                anomalies: 1,
                finalState: .closed,
                ending: SessionEnd.clientVanished.rawValue
            )
        )
        let text = metrics.exposition()
        #expect(text.contains(#"popgate_commands_total{verb="USER"} 1"#))
        #expect(text.contains(#"popgate_commands_total{verb="other"} 1"#))
        #expect(text.contains(#"popgate_anomalies_total{rule="R20",severity="violation"} 1"#), "\(text)")
        #expect(text.contains(#"popgate_sessions_ended_total{listener="front",ending="client_vanished"} 1"#))
        #expect(text.contains(#"popgate_refusals_total{listener="front",rule="gateway.rules:3"} 1"#))
        #expect(text.contains(#"popgate_tls_handshakes_total{listener="front",peer="client",result="failed"} 1"#))
        #expect(text.contains(#"popgate_octets_total{direction="from_upstream"} 20"#))
        for leaked in ["XYZZY", "alice", "192.0.2.7", "198.51.100.1"] { #expect(!text.contains(leaked), "\(leaked)") }
    }

    @Test("the token comparison: equal only when equal, whatever the lengths")
    func tokenComparison() {
        #expect(BearerToken.same("s3cret", "s3cret"))
        #expect(!BearerToken.same("s3cret", "s3cre"))
        #expect(!BearerToken.same("s3cret", "s3cret2"))
        #expect(!BearerToken.same("", "x"))
        #expect(BearerToken.cookie("a=b; popgate_token=t0k; c=d") == "t0k")
        #expect(BearerToken.cookie("popgate_tokenx=1") == nil)
    }
}
