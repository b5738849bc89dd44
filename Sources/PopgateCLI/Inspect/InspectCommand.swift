import ArgumentParser
import Logging
import POP3Capture
import POP3Core
import POP3Live
import POP3NIO
import POP3Relay
import ServiceLifecycle

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Popgate {
    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read the POP3 sessions in capture files and print their annotated transcripts.",
            discussion: """
                Reads pcap and pcapng files (whatever their names say) through libpcap: Ethernet (with VLAN tags), \
                Linux cooked SLL and SLL2, BSD loopback and raw IP; IPv4 and IPv6. Each TCP connection to a POP3 \
                port (or one that starts like POP3) is reassembled and read by the same conversation machine as \
                the relay, so a capture reads like a live session.

                Examples:
                  popgate inspect session.pcap
                  popgate inspect --summary ../shared/captures/zeek/pop3.pcap
                  popgate inspect --port 1110 --format json capture.pcapng | jq 'select(.kind=="anomaly")'
                  popgate inspect --anomalies-only --filter "host 192.0.2.7" big.pcap
                  popgate inspect session.pcap --http 8110
                      (then open http://127.0.0.1:8110/ to step through each session line by line; Ctrl-C stops)

                Exit codes: 0 when every file was read, 2 when one is missing, not a capture, truncated or of an \
                unsupported link type (the sessions read before the damage are still printed).
                """
        )

        @Argument(help: "Capture files (pcap or pcapng).", completion: .file())
        var files: [String]

        @Option(name: .customLong("port"), help: "A POP3 port (repeatable; default 110 and 995; 995 is read as TLS).")
        var ports: [Int] = []

        @Option(help: "A BPF filter applied while reading, such as \"host 10.0.0.7\".")
        var filter: String?

        @Option(help: "Output: text or json (JSON lines, the relay's transcript schema).")
        var format: TranscriptRenderer.Format = .text

        @Option(help: "Only the session with this number.")
        var session: Int?

        @Flag(help: "Only the anomalies of each session.")
        var anomaliesOnly = false

        @Option(
            help: ArgumentHelp(
                "Only anomalies of this class or above: note, interop, violation, security.",
                discussion: "The order is note < interop < violation < security."
            )
        )
        var minSeverity: Severity?

        @Flag(help: "One line per session, then totals.")
        var summary = false

        @Option(help: "Colour: auto, always or never.")
        var color: ColorChoice = .auto

        @OptionGroup(title: "Reassembly memory")
        var reassembly: ReassemblyOptions

        @Option(help: "After reading, serve the sessions on the live page at HOST:PORT (a bare PORT: 127.0.0.1).")
        var http: String?

        @Option(help: "A bearer token the page and its API want (default: $POPGATE_HTTP_TOKEN, else none).")
        var httpToken: String?

        func validate() throws {
            if let http {
                do { _ = try LiveHTTP.endpoint(parsing: http) } catch { throw ValidationError("--http: \(error)") }
            }
            if let token = self.httpToken, let why = LiveHTTP.tokenProblem(token) {
                throw ValidationError("--http-token: \(why)")
            }
        }

        func run() async throws {
            var options = self.reassembly.options(ports: self.ports)
            options.annotate = !self.summary && !self.anomaliesOnly
            let terminal = Terminal.shared
            var failed = false
            var number = 0
            var totals = Totals()
            var undecoded: [String] = []
            // Every session kept whole: a capture's page is for stepping through, not a bounded live view.
            var limits = LiveBoard.Limits()
            limits.recordsPerSession = 1_000_000
            limits.recentSessions = 1_000_000
            let board = self.http.map { _ in LiveBoard(limits: limits) }
            for file in self.files {
                let inspector = CaptureInspector(options: options)
                do {
                    if let report = try Self.read(file, filter: self.filter, into: inspector) {
                        terminal.error("popgate inspect: \(file): \(report)")
                        undecoded.append(self.files.count > 1 ? "\(file): \(report)" : report)
                    }
                } catch {
                    terminal.error("popgate inspect: \(error)")
                    failed = true
                }
                inspector.finish()
                if let report = ReassemblyOptions.report(inspector) {
                    terminal.error("popgate inspect: \(file): \(report)")
                }
                // A relay's pcap export holds one session, named by its id: the id is kept.
                let exported = Self.exportedSessionID(file).flatMap { inspector.sessions.count == 1 ? $0 : nil }
                for session in inspector.sessions {
                    number += 1
                    if let wanted = self.session, wanted != number { continue }
                    terminal.write(
                        self.render(
                            session,
                            number: number,
                            name: exported,
                            color: self.color.enabled(for: terminal)
                        )
                    )
                    totals.add(session)
                    board.map { Self.show(session, id: exported ?? String(number), on: $0) }
                }
            }
            if self.summary {
                terminal.write(
                    [totals.line(self.format)] + undecoded.map { self.format == .text ? $0 : Self.undecodedRecord($0) }
                )
            }
            if let board, let http {
                try await self.serve(board, at: try LiveHTTP.endpoint(parsing: http))
            }
            if failed { throw ExitCode(2) }
        }

        /// A capture's session on the board, as the relay would have shown it.
        static func show(_ session: CaptureInspector.Session, id: String, on board: LiveBoard) {
            var info = SessionInfo(id: id, client: session.client.description, server: session.serverLabel)
            info.listener = "capture"
            board.sessionStarted(info, time: session.started)
            for (time, event) in session.events { board.events([event], session: info, time: time) }
            if let user = session.machine.user { board.userIdentified(user, session: info) }
            let summary = SessionSummary(
                clientOctets: session.clientOctets,
                serverOctets: session.serverOctets,
                commands: session.machine.commandCount,
                anomalies: session.events.filter { if case .anomaly = $0.event { true } else { false } }.count,
                finalState: session.machine.state,
                ending: session.captureEnded ? "the capture ended, the connection still open" : nil
            )
            board.sessionEnded(
                info,
                time: session.events.last?.time ?? session.started,
                summary: summary,
                described: Self.describe(session)
            )
        }

        private func serve(_ board: LiveBoard, at endpoint: Endpoint) async throws {
            var logger = Logger(label: "popgate")
            logger.logLevel = .warning
            let token = self.httpToken ?? ProcessInfo.processInfo.environment["POPGATE_HTTP_TOKEN"]
            let terminal = Terminal.shared
            let page = LiveHTTP(
                settings: .init(endpoint: endpoint, token: token.flatMap { $0.isEmpty ? nil : $0 }, mode: "capture"),
                board: board,
                metrics: nil,
                logger: logger,
                bound: { address in
                    guard let address else { return }
                    terminal.error(
                        "popgate inspect: the live page of this capture is on \(LiveHTTP.url(address)) (Ctrl-C stops)"
                    )
                }
            )
            let group = ServiceGroup(services: [page], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            try await group.run()
        }

        /// Feeds every TCP segment of `file` to `inspector`; throws on damage after feeding what came before.
        /// Returns what was not decoded, if anything was not.
        static func read(_ file: String, filter: String?, into inspector: CaptureInspector) throws -> String? {
            let source = try PCAPSource(file: file)
            try PacketDecoder.checkLinkType(source.linkType)
            if let filter { try source.setFilter(filter) }
            while true {
                switch try source.nextSegment() {
                case .packet(let segment, let time):
                    if let segment { inspector.packet(segment, at: time) }
                case .nothing:
                    continue
                case .end:
                    return source.undecodedReport
                }
            }
        }

        static func undecodedRecord(_ text: String) -> String {
            var record = TranscriptRecord(session: "*", time: TranscriptRecord.timestamp(0), kind: "not-decoded")
            record.note = text
            return record.jsonLine()
        }

        /// The session id in a file name as `popgate serve --pcap` writes it (`20261201161633-7.pcap`).
        static func exportedSessionID(_ file: String) -> String? {
            let base = file.split(separator: "/").last.map(String.init) ?? file
            guard base.hasSuffix(".pcap") else { return nil }
            let id = String(base.dropLast(5))
            let parts = id.split(separator: "-")
            guard parts.count == 2, parts[0].count == 14, parts.allSatisfy({ $0.allSatisfy(\.isNumber) }) else {
                return nil
            }
            return id
        }

        func render(_ session: CaptureInspector.Session, number: Int, name: String? = nil, color: Bool) -> [String] {
            if self.summary { return [Self.summaryLine(session, number: number, name: name, format: self.format)] }
            var renderer = TranscriptRenderer(session: name ?? String(number), format: self.format, color: color)
            var lines = renderer.start(
                time: session.started,
                client: session.client.description,
                server: session.serverLabel
            )
            for (time, event) in session.events {
                if case .anomaly(let anomaly) = event {
                    if let floor = self.minSeverity, anomaly.severity < floor { continue }
                } else if self.anomaliesOnly {
                    continue
                }
                lines += renderer.render(event, time: time)
            }
            lines += renderer.end(
                time: session.events.last?.time ?? session.started,
                summary: Self.describe(session),
                state: session.captureEnded ? "capture-ended" : nil
            )
            return lines
        }

        /// What `--summary` adds up over every session printed.
        struct Totals {
            var sessions = 0
            var commands = 0
            var replies = 0
            var anomalies = 0
            var classes: [Severity: Int] = [:]
            var clientOctets = 0
            var serverOctets = 0

            mutating func add(_ session: CaptureInspector.Session) {
                self.sessions += 1
                self.commands += session.machine.commandCount
                for (_, event) in session.events {
                    switch event {
                    case .reply: self.replies += 1
                    case .anomaly(let anomaly):
                        self.anomalies += 1
                        self.classes[anomaly.severity, default: 0] += 1
                    default: break
                    }
                }
                self.clientOctets += session.clientOctets
                self.serverOctets += session.serverOctets
            }

            func line(_ format: TranscriptRenderer.Format) -> String {
                let text =
                    "\(self.sessions) session\(self.sessions == 1 ? "" : "s"), \(self.commands) commands, "
                    + "\(self.replies) replies, \(self.anomalies) anomal\(self.anomalies == 1 ? "y" : "ies")"
                    + Popgate.Inspect.byClass(self.classes) + ", "
                    + "\(self.clientOctets) octets from clients, \(self.serverOctets) from servers"
                switch format {
                case .text:
                    return "totals: " + text
                case .json:
                    var record = TranscriptRecord(session: "*", time: TranscriptRecord.timestamp(0), kind: "totals")
                    record.octets = self.clientOctets + self.serverOctets
                    record.note = text
                    return record.jsonLine()
                }
            }
        }

        /// ` (2 violation, 1 security)`, most serious first; nothing when there are none.
        static func byClass(_ classes: [Severity: Int]) -> String {
            let parts = Severity.allCases.reversed().compactMap { severity in
                classes[severity].map { "\($0) \(severity.rawValue)" }
            }
            return parts.isEmpty ? "" : " (" + parts.joined(separator: ", ") + ")"
        }

        static func describe(_ session: CaptureInspector.Session) -> String {
            let events = session.events.map(\.event)
            let replies = events.filter { if case .reply = $0 { true } else { false } }.count
            let multi = events.filter { if case .reply(let r) = $0 { r.multiline } else { false } }.count
            var classes: [Severity: Int] = [:]
            for case .anomaly(let anomaly) in events { classes[anomaly.severity, default: 0] += 1 }
            let anomalies = classes.values.reduce(0, +)
            let end =
                session.captureEnded
                ? "the capture ended in \(session.machine.state.displayName), the connection still open"
                : "ended in \(session.machine.state.displayName)"
            var text =
                "\(session.machine.commandCount) commands, \(replies) replies (\(multi) multi-line), "
                + "\(anomalies) anomal\(anomalies == 1 ? "y" : "ies")\(Self.byClass(classes)), \(end)"
            if session.retransmissions + session.gaps + session.conflicts > 0 {
                text +=
                    "; TCP: \(session.retransmissions) retransmitted, \(session.gaps) gaps, \(session.conflicts) conflicts"
                if session.limitHits > 0 { text += ", \(session.limitHits) holes given up at a memory limit" }
            }
            return text
        }

        static func summaryLine(
            _ session: CaptureInspector.Session,
            number: Int,
            name: String? = nil,
            format: TranscriptRenderer.Format
        ) -> String {
            switch format {
            case .text:
                return
                    "session \(name ?? String(number))  \(session.client) → \(session.serverLabel)  \(Self.describe(session))"
            case .json:
                var record = TranscriptRecord(
                    session: name ?? String(number),
                    time: TranscriptRecord.timestamp(session.started),
                    kind: "summary"
                )
                record.client = session.client.description
                record.server = session.serverLabel
                record.state = session.captureEnded ? "capture-ended" : session.machine.state.rawValue
                record.note = Self.describe(session)
                return record.jsonLine()
            }
        }
    }
}

extension Severity: ExpressibleByArgument {}
