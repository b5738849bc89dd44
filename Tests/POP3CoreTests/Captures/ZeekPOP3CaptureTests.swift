import Foundation
import NIOCore
import Testing

@testable import POP3Core

/// `../shared/captures/zeek/pop3.pcap`: five POP3 sessions to a public provider, decoded by tshark and read
/// by the conversation machine.
@Suite("zeek/pop3.pcap")
struct ZeekPOP3CaptureTests {
    static let file = SharedCaptures.path("zeek/pop3.pcap")

    @Test("five POP3 sessions; the two refused connections carry no payload")
    func sessionCount() throws {
        let segments = try tsharkSegments(Self.file)
        #expect(Set(segments.map(\.stream)).count == 5)
    }

    @Test("command counts match tshark's POP dissector, SASL responses included")
    func commandCounts() throws {
        let all = sessions(try tsharkSegments(Self.file)).values.flatMap { $0 }
        var ours: [String: Int] = [:]
        for command in all.commands { ours[command.verb, default: 0] += 1 }
        let sasl = all.filter { if case .saslResponse = $0 { true } else { false } }.count
        let tshark = try run(
            "tshark",
            ["-r", Self.file, "-Y", "pop.request", "-T", "fields", "-e", "pop.request.command"]
        )
        var theirs: [String: Int] = [:]
        for line in tshark.split(separator: "\n") { theirs[String(line), default: 0] += 1 }
        let theirSASL = theirs.filter { $0.key.count > 8 }
        for key in theirSASL.keys { theirs[key] = nil }
        #expect(ours == theirs)
        #expect(sasl == theirSASL.values.reduce(0, +))
        #expect(ours == ["CAPA": 5, "QUIT": 4, "AUTH": 6, "STAT": 1, "LIST": 1, "UIDL": 1, "RETR": 3])
        #expect(sasl == 3)
    }

    @Test("ten multi-line replies: five CAPA, LIST, UIDL and three RETR; 474 body lines, 2 dot-stuffed")
    func multiLine() throws {
        let bySession = sessions(try tsharkSegments(Self.file))
        let all = bySession.values.flatMap { $0 }
        let multi = all.replies.filter(\.multiline)
        #expect(multi.count == 10)
        var verbs: [String: Int] = [:]
        for reply in multi { verbs[reply.inResponseTo ?? "", default: 0] += 1 }
        #expect(verbs == ["CAPA": 5, "LIST": 1, "UIDL": 1, "RETR": 3])
        let retr = all.bodies.filter { $0.inResponseTo == "RETR" }
        #expect(retr.count == 3 && retr.allSatisfy(\.complete))
        #expect(retr.map(\.lines).reduce(0, +) == 456)
        // The README's 474 counts every line of the retrieving session's multi-line replies, terminators
        // included: CAPA 6+1, LIST 3+1, UIDL 3+1, RETR 456+3.
        let retrieving = try #require(bySession.values.first { $0.bodies.contains { $0.inResponseTo == "RETR" } })
        #expect(retrieving.bodies.map { $0.lines + 1 }.reduce(0, +) == 474)
        #expect(retr.map(\.stuffedLines).reduce(0, +) == 2)
    }

    @Test("CAPA pipelined with QUIT without PIPELINING is reported; the bare AUTH probe is read as refused")
    func findings() throws {
        let all = sessions(try tsharkSegments(Self.file)).values.flatMap { $0 }
        #expect(all.anomalies.contains { $0.rule == .pipelining })
        let probes = all.replies.filter { $0.inResponseTo == "AUTH" && $0.reply?.status == .err }
        #expect(!probes.isEmpty)
        #expect(!all.anomalies.contains { $0.rule == .unexpectedServerData || $0.rule == .unknownCommands })
    }

    @Test("AUTH PLAIN payloads are masked in every transcript form")
    func masking() throws {
        let segments = try tsharkSegments(Self.file)
        let secrets = ["AGRpZ2l0YWxpbnZlc3RpZ2F0b3JAbmV0d29ya3NpbXMuY29tAG5hcGllcg", "napier"]
        // The secrets are in the capture…
        let raw = String(decoding: segments.flatMap(\.payload), as: UTF8.self)
        for secret in secrets { #expect(raw.contains(secret)) }
        // …and in no transcript.
        let text = sessions(segments).values.map(\.allText).joined()
        for secret in secrets { #expect(!text.contains(secret)) }
        #expect(text.contains("********"))
    }

    @Test("feeding every segment byte by byte gives the same events")
    func byteByByte() throws {
        let segments = try tsharkSegments(Self.file)
        let whole = sessions(segments)
        let bytes = sessions(segments, byteByByte: true)
        for stream in whole.keys {
            #expect(whole[stream]!.coalesced == bytes[stream]!.coalesced, "stream \(stream)")
        }
    }
}
