import struct NIOCore.ByteBuffer
import struct NIOCore.ByteBufferView
import struct NIOCore.CircularBuffer

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ConversationMachine {
    // MARK: - Server bytes

    mutating func readServer(_ input: inout ByteBuffer, into events: inout [ConversationEvent]) {
        self.serverBytesSeen = true
        while input.readableBytes > 0, self.readServerUnit(&input, holdingPartial: false, into: &events) {}
    }

    /// What the server's next unit was, as a gateway's cursor reads it (see ``nextServerUnit(from:at:into:)``).
    public enum ServerStep: Sendable, Hashable {
        /// No line ends in the input and it is within the limit: nothing was taken.
        case needMoreData
        /// Octets were read (a line, part of a body or of an over-long line); no reply ended.
        case read
        /// The greeting line was read.
        case greeted
        /// The reply to the oldest command ended.
        case replyEnded
    }

    /// Reads one unit of the server's bytes from `input`: one line, or a body up to its end or the input's.
    /// A line not yet ended is left in `input`, so a gateway writes to the client only what the machine has read,
    /// a line at a time, and message bodies as slices of what it read.
    public mutating func nextServerUnit(
        from input: inout ByteBuffer,
        at time: Double? = nil,
        into events: inout [ConversationEvent]
    ) -> ServerStep {
        guard input.readableBytes > 0 else { return .needMoreData }
        if let time { self.lastServerActivity = time }
        self.serverBytesSeen = true
        let start = input.readerIndex
        let replies = self.completedReplies
        let greeting = self.state == .greeting
        _ = self.readServerUnit(&input, holdingPartial: true, into: &events)
        if self.completedReplies > replies { return .replyEnded }
        if greeting, self.state != .greeting, self.state != .notPOP3 { return .greeted }
        return input.readerIndex == start ? .needMoreData : .read
    }

    /// One frame, one body scan, or the rest when unread. Returns false when `input` needs more to go on.
    private mutating func readServerUnit(
        _ input: inout ByteBuffer,
        holdingPartial: Bool,
        into events: inout [ConversationEvent]
    ) -> Bool {
        switch self.serverMode {
        case .opaque:
            if self.state == .tlsNegotiation, !self.clientSpokeSinceSTLS {
                // The server cannot be answering a ClientHello it has not received (RFC 2595 §4).
                self.reportOnce(
                    .r31Server,
                    Anomaly(
                        .stls,
                        .server,
                        "the server sent data after its STLS +OK before the client began the handshake (response injection)"
                    ),
                    into: &events
                )
            }
            if !self.probeTLS(.server, input, into: &events) {
                self.countTLS(.server, input, into: &events)
            }
            input.moveReaderIndex(forwardBy: input.readableBytes)
            return false
        case .body(let command, var scanner):
            self.serverMode = .lines  // avoids a copy of the scanner while it mutates
            if let chunk = scanner.scan(&input), self.configuration.bodyChunks {
                events.append(.bodyChunk(chunk))
            }
            if scanner.finished {
                self.bodyEnded(command, scanner, into: &events)
            } else {
                self.serverMode = .body(command, scanner)
            }
        case .listing(let command, let lines, let stuffed, let octets):
            self.serverFramer.limit = self.configuration.replyLineLimit
            guard let frame = self.serverFramer.next(from: &input, holdingPartial: holdingPartial) else { return false }
            self.listingFrame(
                frame,
                command: command,
                lines: lines,
                stuffed: stuffed,
                octets: octets,
                into: &events
            )
        case .lines:
            if self.pickupBox?.value.serverSyncing == true, self.pickupBox?.value.held == nil, self.pending.isEmpty,
                let newline = input.readableBytesView.lastIndex(of: 0x0A)
            {
                // Nothing seen waits for a reply, so no line here can be trusted: whole lines are counted in one
                // step (a body picked up mid-way costs no more than one read from its start). A partial line
                // at the end is framed as usual.
                let octets = newline - input.readableBytesView.startIndex + 1
                let unseen = octets + self.serverFramer.pendingOctets
                self.pickup?.unseenServerOctets += unseen
                self.serverFramer.reset()
                input.moveReaderIndex(forwardBy: octets)
                return true
            }
            self.serverFramer.limit =
                self.pending.first?.opensSASL == true
                ? self.configuration.saslLineLimit : self.configuration.replyLineLimit
            guard let frame = self.serverFramer.next(from: &input, holdingPartial: holdingPartial) else { return false }
            if self.pickupBox?.value.serverSyncing == true, self.unseenServerLine(frame, into: &events) { return true }
            switch frame {
            case .line(let content, let ending):
                self.checkServerLineEnding(content, ending, into: &events)
                self.statusLine(content, into: &events)
            case .tooLong(let prefix, let octets):
                self.report(
                    Anomaly(
                        .replyLength,
                        .server,
                        "the first line of a reply is at most \(self.configuration.replyLineLimit) octets; this one has \(octets)"
                    ),
                    into: &events
                )
                self.statusLine(prefix, truncated: true, into: &events)
            }
        }
        return true
    }

    /// Picked up mid-way: a server line before the first trusted one is counted, not read. Trusted: a status
    /// line (or a SASL challenge to a seen AUTH) that fits the oldest command the capture shows waiting, as
    /// STAT's `+OK n m` does. A single-line candidate is held until what follows shows it was not the first line
    /// of a multi-line reply to a command sent before the capture began. Returns whether the line was taken.
    private mutating func unseenServerLine(_ frame: LineFramer.Frame, into events: inout [ConversationEvent]) -> Bool {
        var octets = 0
        var content: ByteBuffer?
        switch frame {
        case .line(let line, let ending):
            octets = line.readableBytes + (ending == .crlf ? 2 : 1)
            content = line
        case .tooLong(_, let length):
            octets = length
        }
        let bytes = content?.readableBytesView
        let status = bytes.map { $0.starts(with: Self.okPrefix) || $0.starts(with: Self.errPrefix) } ?? false
        if let held = self.pickupBox?.value.held {
            self.pickup?.held = nil
            guard status else {
                // The held line began a multi-line reply to something not seen: both are not seen.
                self.pickup?.unseenServerOctets += held.octets + octets
                return true
            }
            self.trust(held.content, into: &events)
            return false
        }
        guard let head = self.pending.first, let content, let bytes else {
            self.pickup?.unseenServerOctets += octets
            return true
        }
        let challenge = head.opensSASL && bytes.first == UInt8(ascii: "+") && !status
        guard status || challenge, Self.fits(bytes, head.command) else {
            self.pickup?.unseenServerOctets += octets
            return true
        }
        if status, head.command?.expectsMultiLineReply != true || bytes.first == UInt8(ascii: "-") {
            self.pickup?.held = (content, octets)
            return true
        }
        self.pickup?.serverSyncing = false
        self.reportPickup(into: &events)
        return false
    }

    static let okPrefix = Array("+OK".utf8)
    static let errPrefix = Array("-ERR".utf8)

    /// Whether a status line can be the reply to `command`: STAT's `+OK count size`, LIST's and UIDL's with an
    /// argument naming the same message; any other status line fits any other command.
    static func fits(_ line: ByteBufferView, _ command: Command?) -> Bool {
        guard line.starts(with: Self.okPrefix) else { return true }
        let words = line.split(separator: 0x20)
        func number(_ index: Int) -> Int? {
            guard words.count > index else { return nil }
            return Int(String(decoding: words[index], as: UTF8.self))
        }
        switch command {
        case .stat?: return number(1) != nil && number(2) != nil
        case .list(let n?)?, .uidl(let n?)?: return number(1) == n
        default: return true
        }
    }

    /// A held status line turned out to be a reply (a status line, a command or a close came next): reading
    /// begins with it.
    private mutating func trust(_ content: ByteBuffer, into events: inout [ConversationEvent]) {
        self.pickup?.serverSyncing = false
        self.reportPickup(into: &events)
        self.statusLine(content, into: &events)
    }

    /// Before anything after it is read: a held status line is the reply it looked like.
    mutating func releaseHeldReply(into events: inout [ConversationEvent]) {
        guard let held = self.pickupBox?.value.held else { return }
        self.pickup?.held = nil
        self.trust(held.content, into: &events)
    }

    /// Picked up mid-way: a reply that shows where the session is settles the guessed state. An +OK to a
    /// TRANSACTION command means TRANSACTION; one to USER, PASS, APOP, AUTH or STLS means AUTHORIZATION before
    /// it (the reply then moves it on as usual). Others (CAPA, -ERR to most) settle nothing.
    mutating func inferState(from reply: Reply, to pending: PendingCommand, into events: inout [ConversationEvent]) {
        guard reply.status == .ok, let command = pending.command else { return }
        switch command {
        case .stat, .list, .retr, .dele, .noop, .rset, .top, .uidl:
            self.pickup?.stateGuessed = false
            self.enter(
                .transaction,
                "picked up mid-way: \(pending.verb)'s +OK shows the maildrop is open (RFC 1939 §5).",
                into: &events
            )
        case .pass:
            self.pickup?.stateGuessed = false
            self.state = .userAccepted
        case .user, .apop, .auth, .stls:
            self.pickup?.stateGuessed = false
            self.state = .authorization
        default:
            break
        }
    }

    /// The one finding that says where reading began, once both sides are read.
    mutating func reportPickup(into events: inout [ConversationEvent]) {
        guard let pickup = self.pickupBox?.value, pickup.number >= self.pickupsReported else { return }
        self.pickupsReported = pickup.number + 1
        let what =
            pickup.number == 0
            ? "read from octet \(pickup.unseenServerOctets) of the server's stream and \(pickup.unseenClientOctets) of the client's; what came before is not seen from the start"
            : "read again after \(pickup.unseenServerOctets) more octets from the server and \(pickup.unseenClientOctets) from the client that could not be placed"
        events.append(
            .anomaly(Anomaly(.unexpectedServerData, .capture, "\(pickup.reason): \(what)", severity: .note))
        )
    }

    private mutating func checkServerLineEnding(
        _ content: ByteBuffer,
        _ ending: LineFramer.Ending,
        into events: inout [ConversationEvent]
    ) {
        if ending == .lf {
            self.reportOnce(
                .r1ServerLF,
                Anomaly(
                    .lineEnding,
                    .server,
                    "a line ends with a bare LF instead of CRLF (further ones are not reported)"
                ),
                into: &events
            )
        }
        if content.readableBytesView.contains(0x0D) {
            self.reportOnce(.r1ServerCR, Anomaly(.lineEnding, .server, "a bare CR inside a line"), into: &events)
        }
    }

    // MARK: Status lines

    private mutating func statusLine(
        _ content: ByteBuffer,
        truncated: Bool = false,
        into events: inout [ConversationEvent]
    ) {
        let bytes = content.readableBytesView
        // The line's text is for the events' readers; a machine that writes no notes (a gateway without outputs)
        // has none, and its findings quote the octets themselves.
        let rawText = self.configuration.annotate ? String(decoding: bytes, as: UTF8.self) + (truncated ? "…" : "") : ""
        if !self.utf8Accepted, bytes.contains(where: { $0 >= 0x80 }) {
            self.reportOnce(
                .r10Server,
                Anomaly(.eightBit, .server, "8-bit octets in a status line before UTF8 was accepted"),
                into: &events
            )
        }

        if self.state == .greeting {
            self.greeting(bytes, text: rawText, into: &events)
            return
        }
        guard let head = self.pending.first else {
            self.unexpectedLine(bytes, text: rawText, into: &events)
            return
        }
        let parsed = ReplyParser.parse(bytes, continuationAllowed: head.opensSASL)
        for issue in parsed.issues { self.report(issue, into: &events) }
        guard let reply = parsed.reply else {
            // Not a status line: leave the command waiting, as Zeek does, and say so.
            self.lineWithoutStatus(
                rawText,
                inResponseTo: head.verb,
                note: "Not a status line: a reply starts with +OK or -ERR (RFC 1939 §3).",
                into: &events
            )
            let rule: Rule = bytes.first == 0x2B || bytes.first == 0x2D ? .statusIndicator : .unexpectedServerData
            self.report(
                Anomaly(
                    rule,
                    .server,
                    "a reply to \(head.verb) was expected; \"\(CommandParser.printable(String(decoding: bytes, as: UTF8.self), limit: 30))\" is not +OK or -ERR"
                ),
                into: &events
            )
            self.suspect("the server does not answer with +OK or -ERR", into: &events)
            return
        }

        if reply.status == .continuation {
            self.saslChallengePending = true
            let text = reply.text.isEmpty ? "+ " : "+ " + Credential.mask
            if self.state != .saslExchange {
                self.enter(
                    .saslExchange,
                    "client lines are SASL responses until the final reply (RFC 5034 §4).",
                    into: &events
                )
            }
            events.append(
                .reply(
                    ReplyEvent(
                        reply: Reply(.continuation, reply.text.isEmpty ? "" : Credential.mask),
                        text: text,
                        inResponseTo: head.verb,
                        multiline: false,
                        note: self.note(
                            Annotations.reply(reply, to: head.command, verb: head.verb, maildrop: self.maildrop)
                        )
                    )
                )
            )
            if !reply.text.isEmpty, Data(base64Encoded: reply.text) == nil {
                self.report(
                    Anomaly(.saslChallenge, .server, "a SASL challenge that is not valid base64"),
                    into: &events
                )
            }
            return
        }

        let command = self.pending.removeFirst()
        self.saslChallengePending = false
        self.replyCount += 1
        if self.pickupBox?.value.stateGuessed == true { self.inferState(from: reply, to: command, into: &events) }
        var findings: [Anomaly] = []
        self.checkReply(reply, to: command, state: self.state, findings: &findings)
        self.applyReply(reply, to: command)
        let multiline = reply.status == .ok && command.command?.expectsMultiLineReply == true
        self.refusedMultiLine =
            reply.status == .err && command.command?.expectsMultiLineReply == true ? command.verb : nil
        let note = self.note(Annotations.reply(reply, to: command.command, verb: command.verb, maildrop: self.maildrop))
        events.append(
            .reply(
                ReplyEvent(
                    reply: reply,
                    text: rawText,
                    inResponseTo: command.verb,
                    multiline: multiline,
                    note: note,
                    side: self.serverSide
                )
            )
        )
        for finding in findings { self.report(finding, into: &events) }
        self.transition(after: reply, to: command, into: &events)

        if !multiline { self.completedReplies += 1 }
        if multiline {
            switch command.command {
            case .retr?, .top?:
                self.serverMode = .body(command, BodyScanner())
            default:
                if case .capa? = command.command {
                    self.capabilities = []
                    self.capaSinceTLS = true
                }
                self.serverMode = .listing(command, lines: 0, stuffed: 0, octets: 0)
            }
        }
    }

    private mutating func greeting(_ bytes: ByteBufferView, text: String, into events: inout [ConversationEvent]) {
        let parsed = ReplyParser.parse(bytes)
        guard let reply = parsed.reply else {
            for issue in parsed.issues { self.report(issue, into: &events) }
            self.lineWithoutStatus(
                text,
                inResponseTo: nil,
                note: "A POP3 greeting starts with +OK (RFC 1939 §4).",
                into: &events
            )
            self.report(Anomaly(.greeting, .server, "the greeting is not an +OK line"), into: &events)
            self.suspect("the first server line is not a greeting", weight: 2, into: &events)
            return
        }
        // What is wrong with the greeting is said under it, not above it.
        var findings = parsed.issues
        let utf8 = reply.text.utf8
        if let open = utf8.firstIndex(of: UInt8(ascii: "<")),
            let close = utf8[open...].firstIndex(of: UInt8(ascii: ">"))
        {
            let stamp = reply.text[open...close]
            if stamp.utf8.contains(UInt8(ascii: "@")) {
                self.greetingStamped = true
                if self.configuration.annotate { self.greetingTimestamp = String(stamp) }
            } else {
                findings.append(Anomaly(.apop, .server, "the greeting's timestamp is not in msg-id form <…@…>"))
            }
        }
        if reply.code == .inUse || reply.code == .loginDelay || reply.code == .sysTemp || reply.code == .sysPerm
            || reply.code == .auth, reply.status == .ok
        {
            findings.append(Anomaly(.systemCodes, .server, "the response code [\(reply.code!)] goes with -ERR"))
        }
        events.append(
            .reply(
                ReplyEvent(
                    reply: reply,
                    text: text,
                    inResponseTo: nil,
                    multiline: false,
                    note: self.note(Annotations.greeting(reply, timestamp: self.greetingTimestamp))
                )
            )
        )
        for finding in findings { self.report(finding, into: &events) }
        self.replyCount += 1
        if reply.status == .ok {
            self.enter(
                .authorization,
                "the client identifies itself with USER/PASS, APOP or AUTH (RFC 1939 §4).",
                into: &events
            )
        } else {
            self.report(
                Anomaly(.greeting, .server, "the greeting is -ERR, so the server refuses service"),
                into: &events
            )
            self.enter(.closed, "the server refused the session (RFC 1939 §4).", into: &events)
        }
    }

    private mutating func unexpectedLine(_ bytes: ByteBufferView, text: String, into events: inout [ConversationEvent])
    {
        self.lineWithoutStatus(
            text,
            inResponseTo: nil,
            note: "The server sent a line while no command was waiting for a reply.",
            into: &events
        )
        let parsed = CommandParser.parse(bytes)
        if let verb = self.refusedMultiLine {
            self.report(
                Anomaly(
                    .bodyAfterError,
                    .server,
                    "lines followed -ERR to \(verb); after -ERR a reply is a single line"
                ),
                into: &events
            )
        } else if let command = parsed.command, command.isKnown {
            self.report(
                Anomaly(.directionConfusion, .server, "the server sent a line that looks like a client command"),
                into: &events
            )
        } else {
            self.report(
                Anomaly(
                    .unexpectedServerData,
                    .server,
                    "a line while no reply was pending: \"\(CommandParser.printable(String(decoding: bytes, as: UTF8.self), limit: 30))\""
                ),
                into: &events
            )
        }
        self.suspect("the server talks unasked", into: &events)
    }

    /// A server line that is not a status line, shown as the reply it stands in for.
    private func lineWithoutStatus(
        _ text: String,
        inResponseTo verb: String?,
        note: String,
        into events: inout [ConversationEvent]
    ) {
        events.append(.reply(ReplyEvent(reply: nil, text: text, inResponseTo: verb, multiline: false, note: note)))
    }

    // MARK: Multi-line bodies

    static let bareTerminator = Anomaly(
        .multiLineTermination,
        .server,
        "a multi-line reply ends with \".\" CRLF; this one ends with a bare LF"
    )

    private mutating func listingFrame(
        _ frame: LineFramer.Frame,
        command: PendingCommand,
        lines: Int,
        stuffed: Int,
        octets: Int,
        into events: inout [ConversationEvent]
    ) {
        var line: ByteBuffer
        let rawOctets: Int
        switch frame {
        case .tooLong(let prefix, let length):
            self.report(
                Anomaly(
                    .replyLength,
                    .server,
                    "a line of the \(command.verb) listing has \(length) octets, over \(self.configuration.replyLineLimit)"
                ),
                into: &events
            )
            line = prefix
            rawOctets = length
        case .line(let content, let ending):
            self.checkServerLineEnding(content, ending, into: &events)
            line = content
            rawOctets = content.readableBytes + (ending == .crlf ? 2 : 1)
        }
        var stuffed = stuffed
        if line.getInteger(at: line.readerIndex, as: UInt8.self) == 0x2E {
            if line.readableBytes == 1 {
                if case .line(_, .lf) = frame {
                    self.report(Self.bareTerminator, into: &events)
                }
                self.serverMode = .lines
                let summary = BodySummary(
                    inResponseTo: command.verb,
                    octets: octets,
                    lines: lines,
                    stuffedLines: stuffed,
                    complete: true,
                    note: self.note(self.listingNote(command, lines: lines))
                )
                events.append(.bodyEnd(summary))
                self.completedReplies += 1
                self.listingEnded(command, into: &events)
                return
            }
            if line.getInteger(at: line.readerIndex + 1, as: UInt8.self) == 0x2E {
                stuffed += 1
            } else {
                self.report(
                    Anomaly(.dotStuffing, .server, "a listing line begins with a single dot that is not stuffed"),
                    into: &events
                )
            }
            line.moveReaderIndex(forwardBy: 1)
        }
        let text = String(decoding: line.readableBytesView, as: UTF8.self)
        self.serverMode = .listing(command, lines: lines + 1, stuffed: stuffed, octets: octets + rawOctets)
        events.append(.bodyLine(text))
        self.listingLine(text, command: command, into: &events)
    }

    private mutating func listingLine(_ text: String, command: PendingCommand, into events: inout [ConversationEvent]) {
        switch command.command {
        case .list?:
            let fields = CommandParser.fields(text, keepingEmpty: true)
            guard fields.count >= 2, let n = CommandParser.messageNumber(fields.first),
                let size = CommandParser.decimal(fields.second)
            else {
                self.report(
                    Anomaly(.listFormat, .server, "a scan listing line is a message number, a space and a size"),
                    into: &events
                )
                return
            }
            if self.maildrop.isDeleted(n) {
                self.report(
                    Anomaly(.deletedMessage, .server, "message \(n) is marked deleted and must not be listed"),
                    into: &events
                )
            }
            self.maildrop.sizes[n] = size
        case .uidl?:
            let fields = CommandParser.fields(text, keepingEmpty: true)
            guard fields.count == 2, let n = CommandParser.messageNumber(fields.first) else {
                self.report(
                    Anomaly(.uniqueID, .server, "a UIDL line is a message number, a space and a unique id"),
                    into: &events
                )
                return
            }
            self.recordUniqueID(String(decoding: fields.second, as: UTF8.self), for: n, into: &events)
        case .capa?:
            guard let capability = Capability(line: text) else { return }
            self.capabilities?.append(capability)
            if self.configuration.annotate, let note = Annotations.capability(capability) {
                events.append(.annotation(.server, note))
            }
            // Dovecot and others list CAPA itself: the command every listing answers, not an unknown name.
            if !Capability.registered.contains(capability.name), !capability.name.hasPrefix("X"),
                capability.name != "CAPA"
            {
                self.report(
                    Anomaly(
                        .capability,
                        .server,
                        "\(capability.name) is neither registered nor private (X…)",
                        severity: .interop
                    ),
                    into: &events
                )
            }
        default:
            break
        }
    }

    private func listingNote(_ command: PendingCommand, lines: Int) -> String {
        switch command.command {
        case .capa?: "End of the capability list: \(lines) capabilit\(lines == 1 ? "y" : "ies") (RFC 2449 §5)."
        case .list?: "End of the scan listing: \(lines) message\(lines == 1 ? "" : "s") (RFC 1939 §5)."
        case .uidl?: "End of the unique-id listing: \(lines) message\(lines == 1 ? "" : "s") (RFC 1939 §7)."
        default: "End of the \(command.verb) listing: \(lines) line\(lines == 1 ? "" : "s")."
        }
    }

    private mutating func listingEnded(_ command: PendingCommand, into events: inout [ConversationEvent]) {
        guard self.configuration.annotate, case .capa? = command.command, let capabilities = self.capabilities else {
            return
        }
        if capabilities.contains(where: { $0.name == "STLS" }) == false, self.state.isAuthorization,
            self.tlsActive == false
        {
            events.append(
                .annotation(
                    .server,
                    "This server does not offer STLS, so logins here cross the network in clear (RFC 2595 §2.3)."
                )
            )
        }
    }

    mutating func recordUniqueID(_ uid: String, for n: Int, into events: inout [ConversationEvent]) {
        let utf8 = uid.utf8
        if utf8.isEmpty || utf8.count > POP3Defaults.uniqueIDLimit || !utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) {
            self.report(
                Anomaly(.uniqueID, .server, "a unique id is 1 to 70 characters from 0x21 to 0x7E"),
                into: &events
            )
        }
        if let known = self.maildrop.uniqueIDs[n], known != uid {
            self.report(
                Anomaly(.uniqueID, .server, "message \(n) had unique id \(known), now \(uid); it must not change"),
                into: &events
            )
        }
        if self.maildrop.isDeleted(n) {
            self.report(
                Anomaly(.deletedMessage, .server, "message \(n) is marked deleted and must not be listed"),
                into: &events
            )
        }
        self.maildrop.uniqueIDs[n] = uid
    }

    private mutating func bodyEnded(
        _ command: PendingCommand,
        _ scanner: BodyScanner,
        into events: inout [ConversationEvent]
    ) {
        var summary = BodySummary(
            inResponseTo: command.verb,
            octets: scanner.octets,
            lines: scanner.lines,
            stuffedLines: scanner.stuffedLines,
            complete: true,
            note: ""
        )
        summary.note = self.note(Annotations.body(summary, messageOctets: scanner.messageOctets))
        events.append(.bodyEnd(summary))
        self.completedReplies += 1
        if scanner.bareTerminator {
            self.report(Self.bareTerminator, into: &events)
        }
        if scanner.unstuffedLines > 0 {
            self.report(
                Anomaly(
                    .dotStuffing,
                    .server,
                    "\(scanner.unstuffedLines) body line\(scanner.unstuffedLines == 1 ? "" : "s") began with a single dot that was not stuffed"
                ),
                into: &events
            )
        }
        if scanner.bareLineEndings > 0 {
            self.reportOnce(
                .r1ServerLF,
                Anomaly(
                    .lineEnding,
                    .server,
                    "body lines end with a bare LF instead of CRLF (further ones are not reported)"
                ),
                into: &events
            )
        }
        if scanner.eightBitHeaderLines > 0, !self.utf8Accepted {
            self.report(
                Anomaly(.utf8Content, .server, "8-bit octets in the message headers before UTF8 was accepted"),
                into: &events
            )
        }
        switch command.command {
        case .retr(let n)?:
            if let size = self.maildrop.sizes[n], size != scanner.messageOctets {
                self.report(
                    Anomaly(
                        .messageSize,
                        .server,
                        "LIST said message \(n) has \(size) octets; RETR delivered \(scanner.messageOctets)"
                    ),
                    into: &events
                )
            }
        case .top(_, let lines)?:
            if scanner.bodyLines > lines {
                self.report(
                    Anomaly(.topFormat, .server, "TOP asked for \(lines) body lines and got \(scanner.bodyLines)"),
                    into: &events
                )
            }
        default:
            break
        }
    }
}
