import Foundation
import NIOCore
import POP3Capture
import POP3Core
import Testing

/// The public captures in ../shared/captures/, read by libpcap and the capture inspector.
@Suite("Shared captures")
struct SharedCaptureTests {
    static var directory: String {
        if let override = ProcessInfo.processInfo.environment["POPGATE_SHARED_CAPTURES"] { return override }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared/captures").path
    }

    static func inspect(_ name: String, ports: Set<Int>? = nil) throws -> [CaptureInspector.Session] {
        try self.inspect(file: directory + "/" + name, ports: ports)
    }

    static func inspect(file path: String, ports: Set<Int>? = nil) throws -> [CaptureInspector.Session] {
        var options = CaptureInspector.Options()
        if let ports { options.ports = ports }
        let inspector = CaptureInspector(options: options)
        let source = try PCAPSource(file: path)
        try PacketDecoder.checkLinkType(source.linkType)
        while true {
            switch try source.nextSegment() {
            case .packet(let segment, let time):
                if let segment { inspector.packet(segment, at: time) }
                continue
            case .nothing:
                continue
            case .end:
                break
            }
            break
        }
        inspector.finish()
        return inspector.sessions
    }

    static func verbs(_ sessions: [CaptureInspector.Session]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for session in sessions {
            for case .command(let c) in session.events.map(\.event) { counts[c.verb, default: 0] += 1 }
        }
        return counts
    }

    static func events(_ sessions: [CaptureInspector.Session]) -> [ConversationEvent] {
        sessions.flatMap { $0.events.map(\.event) }
    }

    @Test("zeek/pop3.pcap: 5 sessions, their commands, 10 multi-line replies, 456 RETR lines, 2 dot-stuffed")
    func zeekPOP3() throws {
        let sessions = try Self.inspect("zeek/pop3.pcap")
        #expect(sessions.count == 5)
        #expect(Self.verbs(sessions) == ["CAPA": 5, "QUIT": 4, "AUTH": 6, "STAT": 1, "LIST": 1, "UIDL": 1, "RETR": 3])
        let events = Self.events(sessions)
        #expect(events.filter { if case .reply(let r) = $0 { r.multiline } else { false } }.count == 10)
        let retr = events.compactMap { if case .bodyEnd(let b) = $0, b.inResponseTo == "RETR" { b } else { nil } }
        #expect(retr.map(\.lines).reduce(0, +) == 456)
        #expect(retr.map(\.stuffedLines).reduce(0, +) == 2)
        let text = sessions.map { s in
            var r = TranscriptRenderer(session: "\(s.number)", format: .json)
            return s.events.flatMap { r.render($0.event, time: $0.time) }.joined()
        }.joined()
        #expect(!text.contains("napier"))
        #expect(!text.contains("AGRpZ2l0YWxpbnZlc3RpZ2F0b3JAbmV0d29ya3NpbXMuY29tAG5hcGllcg"))
    }

    @Test("ndpi/pop3.pcap is pcapng: 6 sessions, the 2012 one in lower case read as the same commands")
    func ndpiPOP3() throws {
        let sessions = try Self.inspect("ndpi/pop3.pcap")
        #expect(sessions.count == 6)
        let lower = try #require(
            sessions.first { $0.server.port == 110 && $0.client.address.description == "143.225.229.181" }
        )
        #expect(Self.verbs([lower]) == ["USER": 1, "PASS": 1, "LIST": 1, "UIDL": 1, "RETR": 1, "QUIT": 1])
    }

    @Test("STLS captures: STLS accepted, then only TLS records, counted not read")
    func starttls() throws {
        for name in ["zeek/pop3-starttls.pcap", "ndpi/pop3_stls.pcap"] {
            let sessions = try Self.inspect(name)
            #expect(sessions.count == 1, "\(name)")
            let events = Self.events(sessions)
            #expect(
                events.contains { if case .stateChanged(.tlsNegotiation, _) = $0 { true } else { false } },
                "\(name)"
            )
            let opaque = events.compactMap { if case .opaque(_, let n) = $0 { n } else { nil } }.reduce(0, +)
            #expect(opaque > 1000, "\(name)")
            #expect(Self.verbs(sessions)["STLS"] == 1, "\(name)")
        }
    }

    @Test("ndpi/pops.pcapng: port 995 is TLS from the first byte; no POP3 is read")
    func implicitTLS() throws {
        let sessions = try Self.inspect("ndpi/pops.pcapng")
        #expect(sessions.count == 1)
        // Five packets, no FIN or RST (tshark agrees): the capture ends with the connection open, and says so.
        #expect(sessions[0].machine.state == .encrypted && sessions[0].captureEnded)
        #expect(
            Self.events(sessions).contains {
                if case .annotation(.capture, let text) = $0 {
                    text.contains("the connection was still open")
                } else {
                    false
                }
            }
        )
        #expect(!Self.events(sessions).contains { if case .closed = $0 { true } else { false } })
        #expect(Self.verbs(sessions).isEmpty)
        #expect(!Self.events(sessions).contains { if case .anomaly = $0 { true } else { false } })
    }

    @Test("zeek/pop3-unknown-commands.pcap: LF-only lines on both sides and 3 junk lines before +OK 1 236")
    func lfOnly() throws {
        let sessions = try Self.inspect("zeek/pop3-unknown-commands.pcap")
        #expect(sessions.count == 1)
        let anomalies = Self.events(sessions).compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        #expect(anomalies.contains { $0.rule == .lineEnding && $0.side == .client })
        #expect(anomalies.contains { $0.rule == .lineEnding && $0.side == .server })
        let junk = Self.events(sessions).filter { if case .reply(let r) = $0 { r.reply == nil } else { false } }
        #expect(junk.count == 3)
        let stat = Self.events(sessions).compactMap {
            if case .reply(let r) = $0, r.inResponseTo == "STAT", r.reply != nil { r.text } else { nil }
        }
        #expect(stat == ["+OK 1 236"])
    }

    @Test("zeek/bad-list-retr-crafted.pcap: the garbage line and the listing without its dot are reported")
    func crafted() throws {
        let sessions = try Self.inspect("zeek/bad-list-retr-crafted.pcap")
        #expect(sessions.count == 1)
        let anomalies = Self.events(sessions).compactMap { if case .anomaly(let a) = $0 { a } else { nil } }
        #expect(
            anomalies.contains {
                $0.side == .server && ($0.rule == .unexpectedServerData || $0.rule == .statusIndicator)
            }
        )
        #expect(Self.verbs(sessions)["RETR"] == 1)
    }

    @Test("zeek/redis-50-pings.pcap: no POP3 on its own; on port 6379 it is reported as not POP3")
    func redis() throws {
        #expect(try Self.inspect("zeek/redis-50-pings.pcap").isEmpty)
        let sessions = try Self.inspect("zeek/redis-50-pings.pcap", ports: [6379])
        #expect(sessions.count == 1)
        #expect(sessions[0].machine.state == .closed)
        let events = Self.events(sessions)
        #expect(events.contains { if case .stateChanged(.notPOP3, _) = $0 { true } else { false } })
        let anomalies = events.filter { if case .anomaly = $0 { true } else { false } }
        #expect(anomalies.count <= 6)
    }

    @Test("TLS in clear: the server name and version of pops.pcapng; TLS 1.0 with RC4-SHA flagged in pop3_stls.pcap")
    func tlsHellos() throws {
        let pops = Self.events(try Self.inspect("ndpi/pops.pcapng"))
        let hellos = pops.compactMap { if case .tls(_, let h) = $0 { h } else { nil } }
        #expect(hellos.first { $0.kind == .clientHello }?.serverName == "pop.secureserver.net")
        #expect(hellos.first { $0.kind == .serverHello }?.versionName == "TLS 1.2")
        let lavabit = Self.events(try Self.inspect("ndpi/pop3_stls.pcap"))
        let server = lavabit.compactMap { if case .tls(.server, let h) = $0 { h } else { nil } }.first
        #expect(server?.versionName == "TLS 1.0")
        #expect(server?.cipherName == "TLS_RSA_WITH_RC4_128_SHA")
        let weak = lavabit.compactMap {
            if case .anomaly(let a) = $0, a.rule == .cleartextLogin, a.side == .server { a } else { nil }
        }
        #expect(weak.count == 2)
    }

    @Test("every shared capture reads the same when its segments are fed one byte at a time")
    func byteByByte() throws {
        for name in [
            "zeek/pop3.pcap", "ndpi/pop3_stls.pcap", "ndpi/pops.pcapng", "zeek/pop3-unknown-commands.pcap",
            "zeek/bad-list-retr-crafted.pcap",
        ] {
            let source = try PCAPSource(file: Self.directory + "/" + name)
            var segments: [(TCPSegment, Double)] = []
            while case .packet(let packet) = try source.next() {
                if let segment = PacketDecoder.tcp(packet.bytes, linkType: source.linkType) {
                    segments.append((segment, packet.time))
                }
            }
            let whole = CaptureInspector()
            for (segment, time) in segments { whole.packet(segment, at: time) }
            whole.finish()
            let bytes = CaptureInspector()
            for (segment, time) in segments {
                if segment.payload.readableBytes == 0 {
                    bytes.packet(segment, at: time)
                    continue
                }
                for (index, byte) in segment.payload.readableBytesView.enumerated() {
                    var piece = segment
                    piece.sequence = segment.sequence &+ UInt32(index)
                    piece.payload = ByteBuffer(bytes: [byte])
                    // FIN and RST go with the last byte only.
                    if index < segment.payload.readableBytes - 1 { piece.flags &= ~0x05 }
                    bytes.packet(piece, at: time)
                }
            }
            bytes.finish()
            #expect(
                whole.sessions.map { $0.events.map(\.event).mergingChunks() }
                    == bytes.sessions.map { $0.events.map(\.event).mergingChunks() },
                "\(name)"
            )
        }
    }
}
