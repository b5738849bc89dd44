import struct NIOCore.ByteBuffer

/// Turns conversation events into an annotated transcript: plain or coloured text, or JSON lines.
///
/// The relay, the inspector and the demo all print through this, so a capture and a live session read
/// the same way. Credentials never reach it: the events carry them masked already.
public struct TranscriptRenderer: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case text
        case json
    }

    public var format: Format
    /// ANSI colours, for a terminal.
    public var color: Bool
    /// Print RETR/TOP bodies line by line instead of a summary.
    public var showBodies: Bool
    /// Print the annotation under each line.
    public var showNotes: Bool
    public let session: String

    private var bodyPartial = ByteBuffer()
    /// Octets not read, per side, since the last event that was read.
    private var opaque: [Side: Int] = [:]

    public init(
        session: String,
        format: Format = .text,
        color: Bool = false,
        showBodies: Bool = false,
        showNotes: Bool = true
    ) {
        self.session = session
        self.format = format
        self.color = color
        self.showBodies = showBodies
        self.showNotes = showNotes
    }

    // MARK: - Session boundaries

    /// `via`: the balancer a PROXY protocol header came from, when it named the client.
    /// `gateway`: the relay's listening address the client came to, between the client and the upstream.
    public mutating func start(
        time: Double,
        client: String?,
        server: String?,
        via: String? = nil,
        gateway: String? = nil
    ) -> [String] {
        let shown = client.map { client in via.map { "\(client) (via \($0))" } ?? client }
        let peers = [shown, gateway.map { "gateway \($0)" }, server].compactMap { $0 }.joined(separator: " → ")
        return [
            self.boundary(
                "session-start",
                time: time,
                text: "── session \(self.session)  \(peers)  \(TranscriptRecord.timestamp(time))"
            ) {
                $0.client = client
                $0.server = server
                $0.via = via
                $0.gateway = gateway
            }
        ]
    }

    /// `state`: how it ended when that is not a close (`capture-ended`), for the JSON record.
    public mutating func end(time: Double, summary: String, state: String? = nil) -> [String] {
        self.flushOpaque(time: time)
            + [
                self.boundary("session-end", time: time, text: "── end of session \(self.session): \(summary)") {
                    $0.note = summary
                    $0.state = state
                }
            ]
    }

    /// The last line of a transcript whose writer fell behind: where and why it stops.
    public func stopped(time: Double, reason: String) -> [String] {
        let note = "the transcript stops here: \(reason); the session goes on"
        return [
            self.boundary("transcript-stopped", time: time, text: "── session \(self.session): \(note)") {
                $0.note = note
            }
        ]
    }

    /// A session-level line: a header in text, a record of `kind` in JSON.
    private func boundary(
        _ kind: String,
        time: Double,
        text: String,
        _ fill: (inout TranscriptRecord) -> Void
    ) -> String {
        switch self.format {
        case .json:
            var record = TranscriptRecord(session: self.session, time: TranscriptRecord.timestamp(time), kind: kind)
            fill(&record)
            return record.jsonLine()
        case .text:
            return self.paint(text, .header)
        }
    }

    // MARK: - Events

    public mutating func render(_ event: ConversationEvent, time: Double) -> [String] {
        if case .opaque(let side, let octets) = event {
            self.opaque[side, default: 0] += octets
            return []
        }
        var lines = self.flushOpaque(time: time)
        switch self.format {
        case .json: lines += self.json(event, time: time)
        case .text: lines += self.text(event)
        }
        return lines
    }

    /// ``render(_:time:)`` written into `out`, each line ending in a newline: a JSON record goes there with no
    /// string made for it (a transcript file takes bytes).
    public mutating func render(_ event: ConversationEvent, time: Double, into out: inout ByteBuffer) {
        guard self.format == .json else {
            for line in self.render(event, time: time) {
                out.writeString(line)
                out.writeInteger(UInt8(0x0A))
            }
            return
        }
        if case .opaque(let side, let octets) = event {
            self.opaque[side, default: 0] += octets
            return
        }
        for record in self.opaqueRecords(time: time) {
            record.writeJSONLine(into: &out)
            out.writeInteger(UInt8(0x0A))
        }
        if let record = self.record(event, time: time) {
            record.writeJSONLine(into: &out)
            out.writeInteger(UInt8(0x0A))
        }
    }

    private mutating func flushOpaque(time: Double) -> [String] {
        guard !self.opaque.isEmpty else { return [] }
        switch self.format {
        case .json:
            return self.opaqueRecords(time: time).map { $0.jsonLine() }
        case .text:
            defer { self.opaque.removeAll() }
            let sides = [Side.client, .server, .gateway].filter { self.opaque[$0] != nil }
            let parts = sides.map { "\(self.opaque[$0] ?? 0) octets from the \($0.rawValue)" }
            return [self.paint("   [not read, encrypted or not POP3: \(parts.joined(separator: ", "))]", .dim)]
        }
    }

    /// The octets not read since the last event that was, one record per side; counted from zero again.
    private mutating func opaqueRecords(time: Double) -> [TranscriptRecord] {
        guard !self.opaque.isEmpty else { return [] }
        defer { self.opaque.removeAll() }
        return [Side.client, .server, .gateway].compactMap { side in
            guard let octets = self.opaque[side] else { return nil }
            var record = TranscriptRecord(session: self.session, time: TranscriptRecord.timestamp(time), kind: "opaque")
            record.side = side.rawValue
            record.octets = octets
            return record
        }
    }

    private func json(_ event: ConversationEvent, time: Double) -> [String] {
        self.record(event, time: time).map { [$0.jsonLine()] } ?? []
    }

    /// The event's JSON record; nil for what JSON does not show (bodies unless asked, opaque counts).
    private func record(_ event: ConversationEvent, time: Double) -> TranscriptRecord? {
        var r = TranscriptRecord(session: self.session, time: TranscriptRecord.timestamp(time), kind: "")
        switch event {
        case .command(let c):
            r.kind = "command"
            r.side = Side.client.rawValue
            r.verb = c.verb
            r.text = c.text
            r.note = c.note
        case .saslResponse(let s):
            r.kind = "sasl"
            r.side = Side.client.rawValue
            r.text = s.text
            r.octets = s.octets
            r.note = s.note
        case .reply(let reply):
            r.kind = "reply"
            r.side = reply.side.rawValue
            r.verb = reply.inResponseTo
            r.status = reply.reply?.status.rawValue
            r.code = reply.reply?.code?.description
            r.multiline = reply.multiline
            r.text = reply.text
            r.note = reply.note
        case .bodyLine(let text):
            r.kind = "body-line"
            r.side = Side.server.rawValue
            r.text = text
        case .bodyChunk(let chunk):
            guard self.showBodies else { return nil }
            r.kind = "body-chunk"
            r.side = Side.server.rawValue
            r.octets = chunk.readableBytes
            r.text = String(buffer: chunk)
        case .bodyEnd(let summary):
            r.kind = "body"
            r.side = Side.server.rawValue
            r.verb = summary.inResponseTo
            r.octets = summary.octets
            r.lines = summary.lines
            r.stuffed = summary.stuffedLines
            r.complete = summary.complete
            r.note = summary.note
        case .stateChanged(let state, let note):
            r.kind = "state"
            r.state = state.rawValue
            r.note = note
        case .annotation(let side, let note):
            r.kind = "note"
            r.side = side.rawValue
            r.note = note
        case .anomaly(let anomaly):
            r.kind = "anomaly"
            r.side = anomaly.side.rawValue
            r.rule = anomaly.rule.id
            r.reason = anomaly.reason
            r.severity = anomaly.severity.rawValue
        case .closed(let side):
            r.kind = "closed"
            r.side = side.rawValue
        case .tls(let side, let hello):
            r.kind = "tls"
            r.side = side.rawValue
            r.text = Self.describe(hello)
            r.note = Self.tlsNote(hello)
        case .opaque:
            return nil
        }
        return r
    }

    private mutating func text(_ event: ConversationEvent) -> [String] {
        switch event {
        case .command(let c):
            return [self.paint("C: " + c.text, .client)] + self.note(c.note)
        case .saslResponse(let s):
            return [self.paint("C: " + s.text, .client)] + self.note(s.note)
        case .reply(let reply):
            let line = Self.prefix(reply.side) + " " + reply.text
            return [self.paint(line, reply.side == .gateway ? .gateway : .server)] + self.note(reply.note)
        case .bodyLine(let text):
            return [self.paint("S:   " + text, .server)]
        case .bodyChunk(let chunk):
            guard self.showBodies else { return [] }
            var chunk = chunk
            self.bodyPartial.writeBuffer(&chunk)
            var lines: [String] = []
            while let newline = self.bodyPartial.readableBytesView.firstIndex(of: 0x0A) {
                let length = newline - self.bodyPartial.readerIndex
                var line = self.bodyPartial.readString(length: length) ?? ""
                self.bodyPartial.moveReaderIndex(forwardBy: 1)
                if line.hasSuffix("\r") { line.removeLast() }
                lines.append(self.paint("S|  " + line, .body))
            }
            self.bodyPartial.discardReadBytes()
            return lines
        case .bodyEnd(let summary):
            var lines: [String] = []
            if self.bodyPartial.readableBytes > 0 {
                lines.append(
                    self.paint(
                        "S|  " + (self.bodyPartial.readString(length: self.bodyPartial.readableBytes) ?? ""),
                        .body
                    )
                )
                self.bodyPartial.clear()
            }
            let what =
                summary.complete
                ? "[end of \(summary.inResponseTo): \(summary.lines) lines, \(summary.octets) octets"
                    + (summary.stuffedLines > 0 ? ", \(summary.stuffedLines) dot-stuffed" : "") + "]"
                : "[\(summary.inResponseTo) cut short: \(summary.lines) lines, \(summary.octets) octets]"
            return lines + [self.paint("S: " + what, .server)] + self.note(summary.note)
        case .stateChanged(let state, let note):
            return [self.paint("   ▸ \(state.displayName): \(note)", .state)]
        case .annotation(let side, let note):
            let mark = side == .client ? "C" : side == .server ? "S" : side == .gateway ? "G" : "·"
            return [self.paint("   \(mark)· \(note)", .dim)]
        case .anomaly(let anomaly):
            return [
                self.paint(
                    "   ! \(anomaly.rule.id) \(anomaly.severity.rawValue) \(anomaly.side.rawValue): \(anomaly.reason)",
                    .anomaly
                )
            ]
        case .closed(let side):
            return [self.paint("   ▸ the \(side.rawValue) closed the connection", .state)]
        case .tls(let side, let hello):
            return [
                self.paint("\(Self.prefix(side)) [TLS \(Self.describe(hello))]", side == .client ? .client : .server)
            ]
                + self.note(Self.tlsNote(hello))
        case .opaque:
            return []
        }
    }

    static func describe(_ hello: TLSHello) -> String {
        var parts = ["\(hello.kind.rawValue): \(hello.versionName)"]
        if let name = hello.serverName { parts.append("server name \(name)") }
        if let cipher = hello.cipherName { parts.append("cipher \(cipher)") }
        return parts.joined(separator: ", ")
    }

    static func tlsNote(_ hello: TLSHello) -> String {
        hello.kind == .clientHello
            ? "The client's first TLS message: the highest version it offers and the server it asks for (RFC 8446 §4.1.2)."
            : "The server's answer: the version and cipher suite of this connection (RFC 8446 §4.1.3)."
    }

    private func note(_ text: String) -> [String] {
        guard self.showNotes, !text.isEmpty else { return [] }
        return [self.paint("   │ " + text, .dim)]
    }

    private static func prefix(_ side: Side) -> String {
        switch side {
        case .client: "C:"
        case .server: "S:"
        case .gateway: "G:"
        case .capture: "·:"
        }
    }

    // MARK: - Colour

    private enum Style {
        case header
        case client
        case server
        case gateway
        case body
        case state
        case anomaly
        case dim
    }

    private func paint(_ text: String, _ style: Style) -> String {
        guard self.color else { return text }
        let code =
            switch style {
            case .header: "1"
            case .client: "36"
            case .server: "32"
            case .gateway: "35"
            case .body: "90"
            case .state: "33"
            case .anomaly: "1;31"
            case .dim: "2"
            }
        return "\u{1B}[\(code)m\(text)\u{1B}[0m"
    }
}
