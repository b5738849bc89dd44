import NIOCore
import Testing

@testable import POP3Bench

@Suite("the bench's session machine")
struct BenchClientTests {
    static func feed(_ client: inout BenchClient, _ text: String, at now: Int64 = 0) -> [BenchClient.Action] {
        var bytes = ByteBuffer(string: text)
        return client.received(&bytes, now: now)
    }

    static func sent(_ actions: [BenchClient.Action]) -> [String] {
        actions.compactMap { if case .send(let line) = $0 { line } else { nil } }
    }

    @Test("a session: one command at a time, each reply read in full (a body to its dot), QUIT, completed")
    func session() {
        var script = BenchClient.Script(user: "bench0", password: "pw")
        script.commands = [.stat, .list, .retr(1)]
        var client = BenchClient(script: script)
        _ = client.connected(now: 0)
        #expect(Self.sent(Self.feed(&client, "+OK ready\r\n")) == ["USER bench0\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK\r\n")) == ["PASS pw\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK logged in\r\n")) == ["STAT\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK 1 10\r\n")) == ["LIST\r\n"])
        // A body split across reads, with a line that starts with a (stuffed) dot.
        #expect(Self.sent(Self.feed(&client, "+OK\r\n1 10\r")) == [])
        #expect(Self.sent(Self.feed(&client, "\n.\r\n")) == ["RETR 1\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK\r\n..dot\r\nbody\r\n")) == [])
        let retr = Self.feed(&client, ".\r\n", at: 5_000)
        #expect(Self.sent(retr) == ["QUIT\r\n"])
        #expect(retr.contains(.replied(verb: "RETR", nanoseconds: 5_000, octets: 21)))
        #expect(Self.feed(&client, "+OK bye\r\n").last == .finished(.completed))
    }

    @Test("a body fed one octet at a time ends where it ends whole, with the same octets")
    func chunking() {
        let reply = "+OK\r\nline\r\n.stuffed\r\n..\r\n\r\n.\r\n"
        func run(_ pieces: [String]) -> [BenchClient.Action] {
            var script = BenchClient.Script(user: "u", password: "p")
            script.commands = [.list]
            var client = BenchClient(script: script)
            _ = client.connected(now: 0)
            _ = Self.feed(&client, "+OK\r\n+OK\r\n+OK\r\n")
            return pieces.flatMap { Self.feed(&client, $0) }
        }
        let whole = run([reply])
        let octets = run(reply.utf8.map { String(decoding: [$0], as: UTF8.self) })
        #expect(whole == octets)
        #expect(whole.contains(.replied(verb: "LIST", nanoseconds: 0, octets: reply.utf8.count)))
        #expect(Self.sent(whole) == ["QUIT\r\n"])
    }

    @Test("-ERR to PASS fails the session with the kind first; a server that closes early fails it too")
    func failures() {
        var client = BenchClient(script: .init(user: "u", password: "p"))
        _ = client.connected(now: 0)
        _ = Self.feed(&client, "+OK\r\n+OK\r\n")
        #expect(Self.feed(&client, "-ERR [AUTH] no\r\n").last == .finished(.failed("PASS refused: -ERR [AUTH] no")))
        var closed = BenchClient(script: .init(user: "u", password: "p"))
        _ = closed.connected(now: 0)
        #expect(closed.closed() == [.finished(.failed("closed by the server before the script ended"))])
        var garbage = BenchClient(script: .init(user: "u", password: "p"))
        _ = garbage.connected(now: 0)
        #expect(
            Self.feed(&garbage, "HTTP/1.1 400\r\n").last
                == .finished(.failed("greeting: not a POP3 reply: HTTP/1.1 400"))
        )
    }

    @Test("STLS: the handshake comes between +OK and USER")
    func starttls() {
        var script = BenchClient.Script(user: "u", password: "p")
        script.starttls = true
        var client = BenchClient(script: script)
        _ = client.connected(now: 0)
        #expect(Self.sent(Self.feed(&client, "+OK\r\n")) == ["STLS\r\n"])
        #expect(Self.feed(&client, "+OK begin\r\n").contains(.startTLS))
        #expect(Self.sent(client.tlsEstablished(now: 1)) == ["USER u\r\n"])
    }

    @Test("idle: held after the login until released, then NOOP, STAT and QUIT")
    func idle() {
        var script = BenchClient.Script(user: "u", password: "p")
        script.holdAfterLogin = true
        script.commands = [.noop, .stat]
        var client = BenchClient(script: script)
        _ = client.connected(now: 0)
        _ = Self.feed(&client, "+OK\r\n+OK\r\n")
        #expect(Self.feed(&client, "+OK in\r\n").last == .holding)
        #expect(Self.sent(client.release(now: 9)) == ["NOOP\r\n"])
        #expect(Self.sent(client.release(now: 9)) == [], "released once")
    }

    @Test("retr: the message again while the runner says more, then QUIT")
    func retrLoop() {
        var script = BenchClient.Script(user: "u", password: "p")
        script.repeatRetr = 2
        let left = Counter(2)
        var client = BenchClient(script: script, more: { left.take() })
        _ = client.connected(now: 0)
        _ = Self.feed(&client, "+OK\r\n+OK\r\n")
        #expect(Self.sent(Self.feed(&client, "+OK\r\n")) == ["RETR 2\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK\r\nx\r\n.\r\n")) == ["RETR 2\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK\r\nx\r\n.\r\n")) == ["RETR 2\r\n"])
        #expect(Self.sent(Self.feed(&client, "+OK\r\nx\r\n.\r\n")) == ["QUIT\r\n"])
    }

    @Test("errors count by kind, not by their text")
    func kinds() {
        #expect(BenchRunner.kind("PASS refused: -ERR [AUTH] bad") == "PASS refused")
        #expect(
            BenchRunner.kind("connect: connection reset (error set): Connection refused (errno: 111)")
                == "connect: refused"
        )
        #expect(BenchRunner.kind("timeout: no reply in 10.0 s") == "timeout")
    }
}

/// A count the `more` closure can take from, across the Sendable boundary.
final class Counter: @unchecked Sendable {
    private var left: Int
    init(_ left: Int) { self.left = left }
    func take() -> Bool {
        guard self.left > 0 else { return false }
        self.left -= 1
        return true
    }
}
