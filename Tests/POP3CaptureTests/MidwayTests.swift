import Foundation
import NIOCore
import POP3Capture
import POP3Core
import Testing

/// Captures that begin mid-session: the project's own captures and the shared ones, cut at every packet. From
/// the first line that can be trusted on, the reading must be the whole capture's: the same commands, replies
/// and bodies, and no finding the whole capture does not have, but the one that says where reading began.
@Suite("Captures picked up mid-way")
struct MidwayTests {
    static let own = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Captures").path

    /// Every segment of a capture, in order.
    static func segments(_ path: String) throws -> [(TCPSegment, Double)] {
        let source = try PCAPSource(file: path)
        var segments: [(TCPSegment, Double)] = []
        while case .packet(let segment, let time) = try source.nextSegment() {
            if let segment { segments.append((segment, time)) }
        }
        return segments
    }

    static func read(_ segments: some Sequence<(TCPSegment, Double)>, ports: Set<Int>) -> [CaptureInspector.Session] {
        var options = CaptureInspector.Options()
        options.ports = ports
        options.annotate = false
        let inspector = CaptureInspector(options: options)
        for (segment, time) in segments { inspector.packet(segment, at: time) }
        inspector.finish()
        return inspector.sessions
    }

    /// What a reading says, line by line, without notes: commands, replies, body ends.
    static func items(_ session: CaptureInspector.Session) -> [String] {
        session.events.compactMap { _, event in
            switch event {
            case .command(let c): "C \(c.text)"
            case .reply(let r): "S \(r.text)"
            case .bodyEnd(let b): "end \(b.inResponseTo) \(b.octets) \(b.lines) \(b.complete)"
            default: nil
            }
        }
    }

    static func findings(_ session: CaptureInspector.Session) -> [Anomaly] {
        session.events.compactMap { if case .anomaly(let a) = $0.event { a } else { nil } }
    }

    /// A false alarm is a bug: every finding but the capture's own notes is one the whole capture has.
    static func expectNoFindingOfItsOwn(
        _ session: CaptureInspector.Session,
        whole: CaptureInspector.Session,
        _ what: String
    ) {
        let known = Set(Self.findings(whole).map { "\($0.rule.id) \($0.side) \($0.reason)" })
        for finding in Self.findings(session) where finding.side != .capture {
            #expect(
                known.contains("\(finding.rule.id) \(finding.side) \(finding.reason)"),
                "\(what): a finding the whole capture does not have: \(finding.rule.id) \(finding.side): \(finding.reason)"
            )
        }
    }

    static let captures: [(String, Set<Int>)] = [
        (Self.own + "/every-command.pcap", [50107]), (Self.own + "/apop-and-pipelining.pcap", [50107]),
        (Self.own + "/auth-plain.pcap", [50107]), (Self.own + "/auth-login.pcap", [50107]),
        (Self.own + "/misbehaving.pcap", [50107]), (Self.own + "/drop-mid-retr.pcap", [50107]),
        (SharedCaptureTests.directory + "/zeek/pop3.pcap", [110]),
    ]

    @Test("cut at every packet: the tail reads as in the whole capture, with no finding of its own but the pick-up")
    func everyCut() throws {
        for (path, ports) in Self.captures {
            let segments = try Self.segments(path)
            let whole = Self.read(segments, ports: ports)
            for cut in 1..<segments.count {
                let tail = segments[cut...]
                let sessions = Self.read(tail, ports: ports)
                for session in sessions {
                    guard
                        let original = whole.first(where: { $0.client == session.client && $0.server == session.server }
                        )
                    else {
                        Issue.record("\(path) cut \(cut): a session the whole capture does not have")
                        continue
                    }
                    let items = Self.items(session)
                    let all = Self.items(original)
                    // Each side's reading is the tail of the whole capture's (the two interleave differently when
                    // a reply to a command sent before the cut was rightly left unread).
                    for side in ["C ", "S ", "end "] {
                        let mine = items.filter {
                            side == "S " ? $0.hasPrefix("S ") || $0.hasPrefix("end ") : $0.hasPrefix(side)
                        }
                        let theirs = all.filter {
                            side == "S " ? $0.hasPrefix("S ") || $0.hasPrefix("end ") : $0.hasPrefix(side)
                        }
                        #expect(
                            theirs.count >= mine.count && Array(theirs.suffix(mine.count)) == mine,
                            "\(path) cut \(cut):\n\(items.joined(separator: "\n"))\n--- whole:\n\(all.joined(separator: "\n"))"
                        )
                    }
                    Self.expectNoFindingOfItsOwn(session, whole: original, "\(path) cut \(cut)")
                    if session.machine.pickup != nil, !items.isEmpty {
                        #expect(Self.findings(session).contains { $0.side == .capture && $0.severity == .note })
                    }
                }
            }
        }
    }

    /// Whether `mine` appears in `theirs` in order (not necessarily next to each other).
    static func subsequence(_ mine: [String], of theirs: [String]) -> Bool {
        var index = theirs.startIndex
        for item in mine {
            guard let found = theirs[index...].firstIndex(of: item) else { return false }
            index = found + 1
        }
        return true
    }

    @Test("a hole at every packet: reading starts over at the next trusted line; nothing invented, no false finding")
    func everyHole() throws {
        var holes = 0
        for (path, ports) in Self.captures {
            let segments = try Self.segments(path)
            let whole = Self.read(segments, ports: ports)
            for dropped in segments.indices where segments[dropped].0.payload.readableBytes > 0 {
                var holed = segments
                holed.remove(at: dropped)
                let sessions = Self.read(holed, ports: ports)
                for session in sessions {
                    guard
                        let original = whole.first(where: { $0.client == session.client && $0.server == session.server }
                        )
                    else { continue }
                    holes += session.gaps
                    let items = Self.items(session).filter { !$0.hasSuffix(" false") }
                    let all = Self.items(original)
                    for side in ["C ", "S "] {
                        let pick = { (list: [String]) in
                            list.filter {
                                side == "S " ? $0.hasPrefix("S ") || $0.hasPrefix("end ") : $0.hasPrefix(side)
                            }
                        }
                        #expect(
                            Self.subsequence(pick(items), of: pick(all)),
                            "\(path) without packet \(dropped):\n\(items.joined(separator: "\n"))\n--- whole:\n\(all.joined(separator: "\n"))"
                        )
                    }
                    Self.expectNoFindingOfItsOwn(session, whole: original, "\(path) without packet \(dropped)")
                }
            }
        }
        #expect(holes > 50, "the holes were seen as holes")
    }
}
