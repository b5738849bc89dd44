import struct NIOCore.ByteBuffer
import struct NIOCore.ByteBufferView
import struct NIOCore.CircularBuffer

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension ConversationMachine {
    // MARK: - Client bytes

    mutating func readClient(_ input: inout ByteBuffer, final: Bool = false, into events: inout [ConversationEvent]) {
        if self.heldFirstClientOctet {
            self.heldFirstClientOctet = false
            var joined = ByteBuffer(integer: UInt8(0x16))
            joined.writeBuffer(&input)
            input = joined
        }
        if !self.clientBytesSeen, input.readableBytes > 0 {
            if !final, input.readableBytes == 1, input.getInteger(at: input.readerIndex, as: UInt8.self) == 0x16 {
                self.heldFirstClientOctet = true
                input.moveReaderIndex(forwardBy: 1)
                return
            }
            self.clientBytesSeen = true
            self.checkFirstClientBytes(input, into: &events)
        }
        while input.readableBytes > 0 {
            switch self.clientMode {
            case .opaque:
                if self.state == .tlsNegotiation { self.clientSpokeSinceSTLS = true }
                if !self.probeTLS(.client, input, into: &events) {
                    self.countTLS(.client, input, into: &events)
                }
                input.moveReaderIndex(forwardBy: input.readableBytes)
                return
            case .heldAfterSTLS(var held):
                // Bounded: an injection needs only a line or two to be shown.
                let room = max(0, self.configuration.heldAfterSTLSLimit - held.readableBytes)
                if var kept = input.readSlice(length: min(room, input.readableBytes)) {
                    held.writeBuffer(&kept)
                }
                input.moveReaderIndex(forwardBy: input.readableBytes)
                self.clientMode = .heldAfterSTLS(held)
                return
            case .lines:
                self.clientFramer.limit = self.clientLineLimit
                guard let frame = self.clientFramer.next(from: &input) else { return }
                _ = self.clientFrame(frame, into: &events)
            }
        }
    }

    // MARK: - The gateway's cursor

    /// Reads the client's next line from `input` for a gateway, which then decides what becomes of it: each line
    /// is framed and parsed once, here. A line that has not ended is left in `input` (unless it is already over
    /// the limit), so a forwarded line is one slice of what was read.
    public mutating func nextClientLine(
        from input: inout ByteBuffer,
        at time: Double? = nil,
        into events: inout [ConversationEvent]
    ) -> ClientStep {
        guard input.readableBytes > 0 else { return .needMoreData }
        self.readByCursor = true
        if let time { self.lastClientActivity = time }
        if !self.clientBytesSeen {
            // A lone 0x16 waits for the octet that tells a TLS record from a line (it stays in `input`).
            if input.readableBytes == 1, input.getInteger(at: input.readerIndex, as: UInt8.self) == 0x16 {
                return .needMoreData
            }
            self.clientBytesSeen = true
            self.checkFirstClientBytes(input, into: &events)
        }
        switch self.clientMode {
        case .heldAfterSTLS:
            // Kept in view, not taken: the STLS reply decides whether these octets are commands or an injection.
            let kept = min(input.readableBytes, self.configuration.heldAfterSTLSLimit)
            self.clientMode = .heldAfterSTLS(input.getSlice(at: input.readerIndex, length: kept) ?? ByteBuffer())
            return .waitForReply
        case .opaque:
            guard self.state == .notPOP3 else { return .unread }
            // Not POP3: lines are framed and parsed for the gateway to police, not followed.
            self.clientFramer.limit = self.configuration.commandLineLimit
            let start = input.readerIndex
            guard let frame = self.clientFramer.next(from: &input, holdingPartial: true) else {
                return .needMoreData
            }
            events.append(.opaque(.client, octets: input.readerIndex - start))
            switch frame {
            case .tooLong(let prefix, let octets):
                return .line(
                    ClientLine(kind: .tooLong(octets: octets, limit: self.clientFramer.limit), content: prefix)
                )
            case .line(let content, let ending):
                let parsed = CommandParser.parse(content.readableBytesView, utf8Allowed: self.utf8Accepted)
                return .line(
                    ClientLine(
                        kind: .command(parsed, refusal: Self.refusal(content)),
                        content: content,
                        ending: ending
                    )
                )
            }
        case .lines:
            self.clientFramer.limit = self.clientLineLimit
            guard let frame = self.clientFramer.next(from: &input, holdingPartial: true) else { return .needMoreData }
            var line = self.clientFrame(frame, into: &events)
            if case .command(let parsed, nil) = line.kind {
                line.kind = .command(parsed, refusal: Self.refusal(line.content))
            }
            return .line(line)
        }
    }

    /// Why a gateway must not forward a command line, if it must not: control characters, or no keyword of 3 or 4
    /// characters.
    static func refusal(_ content: ByteBuffer) -> String? {
        let bytes = content.readableBytesView
        if bytes.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7F }) {
            return "control characters are not allowed in a command (RFC 1939 section 3)"
        }
        let keywordLength = bytes.firstIndex(of: 0x20).map { $0 - bytes.startIndex } ?? bytes.count
        if keywordLength < 3 || keywordLength > 4 {
            return "a command starts with a keyword of 3 or 4 characters (RFC 2449 section 3)"
        }
        return nil
    }

    /// R11: the client spoke before the greeting. A gateway that holds those lines until the greeting says so when
    /// they arrive; it reads them afterwards, as the server does.
    public mutating func clientSpokeEarly(into events: inout [ConversationEvent]) {
        self.reportOnce(
            .r11Early,
            Anomaly(.greeting, .client, "the client spoke before the server's greeting"),
            into: &events
        )
    }

    /// The gateway sent `*` upstream in place of a SASL response it could not forward: the exchange is cancelled.
    public mutating func gatewayCancelledSASL() {
        guard let index = self.pending.indices.last, self.pending[index].opensSASL else { return }
        self.pending[index].cancelled = true
    }

    /// R36: port 995 carries TLS from the first byte; port 110 does not.
    private mutating func checkFirstClientBytes(_ input: ByteBuffer, into events: inout [ConversationEvent]) {
        let looksLikeTLS =
            input.getInteger(at: input.readerIndex, as: UInt8.self) == 0x16
            && (input.readableBytes < 2 || input.getInteger(at: input.readerIndex + 1, as: UInt8.self) == 0x03)
        if self.configuration.implicitTLS {
            if !looksLikeTLS {
                self.report(
                    Anomaly(
                        .tlsPortMismatch,
                        .client,
                        "on an implicit-TLS port the client's first bytes are not a TLS record"
                    ),
                    into: &events
                )
            }
        } else if looksLikeTLS && self.state != .tlsNegotiation {
            self.report(
                Anomaly(.tlsPortMismatch, .client, "the client started a TLS handshake on a plaintext POP3 connection"),
                into: &events
            )
            self.enter(.encrypted, "the client speaks TLS here; the rest is counted, not read.", into: &events)
            self.clientMode = .opaque
            self.serverMode = .opaque
        }
    }

    private mutating func clientFrame(_ frame: LineFramer.Frame, into events: inout [ConversationEvent]) -> ClientLine {
        // A server line held while picking up mid-way came before this one.
        self.releaseHeldReply(into: &events)
        switch frame {
        case .tooLong(let prefix, let octets) where self.pickupBox?.value.clientSyncing == true:
            self.pickup?.unseenClientOctets += octets
            return ClientLine(
                kind: .tooLong(octets: octets, limit: self.clientLineLimit, inSASL: false),
                content: prefix
            )
        case .tooLong(let prefix, let octets):
            if let index = self.pending.indices.last, self.pending[index].opensSASL {
                return self.overlongSASLResponse(prefix, octets: octets, pendingIndex: index, into: &events)
            }
            let parsed = CommandParser.parse(prefix.readableBytesView, utf8Allowed: self.utf8Accepted)
            let limit =
                self.pending.last?.opensSASL == true
                ? self.configuration.saslLineLimit : self.configuration.commandLineLimit
            events.append(
                .command(
                    CommandEvent(
                        verb: parsed.keyword,
                        command: nil,
                        text: String(parsed.text.prefix(60)) + "…",
                        secretRange: nil,
                        note:
                            "A line of \(octets) octets, longer than the \(limit) a server must accept; it gets -ERR (RFC 2449 §4)."
                    )
                )
            )
            if parsed.keyword == "AUTH" {
                self.report(
                    Anomaly(
                        .saslInitialResponse,
                        .client,
                        "an AUTH line of \(octets) octets: an initial response that makes it longer than \(limit) must be left out"
                    ),
                    into: &events
                )
            } else {
                self.report(
                    Anomaly(
                        .commandLength,
                        .client,
                        "a command is at most \(limit) octets with its CRLF; this one has \(octets)"
                    ),
                    into: &events
                )
            }
            self.commandCount += 1
            self.enqueue(PendingCommand(verb: parsed.keyword, command: nil, opensSASL: false), into: &events)
            return ClientLine(kind: .tooLong(octets: octets, limit: limit), content: prefix)
        case .line(let content, let ending):
            if ending == .lf {
                self.reportOnce(
                    .r1ClientLF,
                    Anomaly(
                        .lineEnding,
                        .client,
                        "a line ends with a bare LF instead of CRLF (further ones are not reported)"
                    ),
                    into: &events
                )
            }
            if content.readableBytesView.contains(0x0D) {
                self.reportOnce(.r1ClientCR, Anomaly(.lineEnding, .client, "a bare CR inside a line"), into: &events)
            }
            if let index = self.pending.indices.last, self.pending[index].opensSASL {
                let cancel = self.saslResponse(content, pendingIndex: index, into: &events)
                return ClientLine(kind: .saslResponse(cancel: cancel), content: content, ending: ending)
            }
            if self.pickupBox?.value.clientSyncing == true {
                // Picked up mid-way: the first line may be the tail of one, or a SASL response; a known
                // command is where reading begins.
                let parsed = CommandParser.parse(content.readableBytesView, utf8Allowed: true)
                guard let command = parsed.command, command.isKnown, parsed.issues.isEmpty else {
                    self.pickup?.unseenClientOctets += content.readableBytes + (ending == .crlf ? 2 : 1)
                    return ClientLine(kind: .command(parsed, refusal: nil), content: content, ending: ending)
                }
                self.pickup?.clientSyncing = false
            }
            let parsed = self.clientCommand(content, into: &events)
            return ClientLine(kind: .command(parsed, refusal: nil), content: content, ending: ending)
        }
    }

    /// A SASL response longer than the SASL line limit (R52): it cannot be passed on whole.
    private mutating func overlongSASLResponse(
        _ prefix: ByteBuffer,
        octets: Int,
        pendingIndex: Int,
        into events: inout [ConversationEvent]
    ) -> ClientLine {
        self.pending[pendingIndex].saslLines += 1
        self.saslChallengePending = false
        events.append(
            .saslResponse(
                SASLResponseEvent(
                    cancel: false,
                    text: Credential.mask,
                    octets: octets,
                    note: self.note(Annotations.saslResponse(cancel: false))
                )
            )
        )
        self.report(
            Anomaly(
                .lengthCaps,
                .client,
                "a SASL response of \(octets) octets, over the limit of \(self.configuration.saslLineLimit)"
            ),
            into: &events
        )
        return ClientLine(
            kind: .tooLong(octets: octets, limit: self.configuration.saslLineLimit, inSASL: true),
            content: prefix
        )
    }

    @discardableResult
    private mutating func saslResponse(
        _ content: ByteBuffer,
        pendingIndex: Int,
        into events: inout [ConversationEvent]
    ) -> Bool {
        let cancel = content.readableBytes == 1 && content.getInteger(at: content.readerIndex, as: UInt8.self) == 0x2A
        self.pending[pendingIndex].saslLines += 1
        self.saslChallengePending = false
        if cancel { self.pending[pendingIndex].cancelled = true }
        events.append(
            .saslResponse(
                SASLResponseEvent(
                    cancel: cancel,
                    text: cancel ? "*" : Credential.mask,
                    octets: content.readableBytes,
                    note: self.note(Annotations.saslResponse(cancel: cancel))
                )
            )
        )
        if self.pending[pendingIndex].saslLines == self.configuration.authLineLimit + 1 {
            self.report(
                Anomaly(
                    .authLines,
                    .client,
                    "more than \(self.configuration.authLineLimit) lines in one AUTH exchange"
                ),
                into: &events
            )
        }
        guard !cancel else { return true }
        // R39: the response must be base64; PLAIN must hold authzid NUL authcid NUL passwd.
        let text = String(decoding: content.readableBytesView, as: UTF8.self)
        if text.isEmpty { return false }
        guard let decoded = Data(base64Encoded: text) else {
            self.report(Anomaly(.saslEncoding, .client, "a SASL response that is not valid base64"), into: &events)
            return false
        }
        if case .auth(let mechanism?, let initial)? = self.pending[pendingIndex].command {
            self.checkSASLPayload(mechanism: mechanism, decoded: decoded, into: &events)
            if mechanism == "LOGIN", initial == nil, self.pending[pendingIndex].saslLines == 1 {
                // LOGIN's first response is the user name (draft-murchison-sasl-login); with an initial response
                // (the name), the first response is the password, never an identity.
                self.saslIdentity = String(decoding: decoded, as: UTF8.self)
                self.user = self.saslIdentity
            }
        }
        return false
    }

    func plainUser(_ decoded: Data) -> String? {
        let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        return String(decoding: parts[1], as: UTF8.self)
    }

    mutating func checkSASLPayload(mechanism: String, decoded: Data, into events: inout [ConversationEvent]) {
        guard mechanism == "PLAIN" else { return }
        if let name = self.plainUser(decoded) {
            self.user = name
            self.saslIdentity = name
        } else {
            self.report(
                Anomaly(
                    .saslEncoding,
                    .client,
                    "a PLAIN response is authzid NUL authcid NUL password; this one is not"
                ),
                into: &events
            )
        }
    }

    private mutating func clientCommand(_ content: ByteBuffer, into events: inout [ConversationEvent]) -> ParsedCommand
    {
        let parsed = CommandParser.parse(content.readableBytesView, utf8Allowed: self.utf8Accepted)
        self.commandCount += 1
        self.refusedMultiLine = nil
        events.append(
            .command(
                CommandEvent(
                    verb: parsed.keyword,
                    command: parsed.command,
                    text: parsed.text,
                    secretRange: parsed.secretRange,
                    note: self.note(Annotations.command(parsed.command, verb: parsed.keyword))
                )
            )
        )
        for issue in parsed.issues {
            self.report(issue, into: &events)
        }

        if self.state == .greeting {
            self.clientSpokeEarly(into: &events)
            self.suspect("the client spoke first", weight: 2, into: &events)
            if self.state == .notPOP3 { return parsed }
        }
        if parsed.keyword == "+OK" || parsed.keyword == "-ERR" {
            self.report(
                Anomaly(.directionConfusion, .client, "the client sent a line that looks like a server reply"),
                into: &events
            )
            self.suspect("the client sends replies", into: &events)
            if self.state == .notPOP3 { return parsed }
        }
        if case .other(let keyword, _)? = parsed.command, !Command.obsoleteKeywords.contains(keyword) {
            self.unknownCommands += 1
            if self.unknownCommands == self.configuration.unknownCommandLimit {
                self.report(
                    Anomaly(.unknownCommands, .client, "\(self.unknownCommands) unknown commands in one session"),
                    into: &events
                )
            }
        }
        // Picked up mid-way without a CAPA seen, whether PIPELINING was offered is not known.
        // Reported once: the reason is built only then (with thousands of commands waiting, scanning them for
        // a CAPA on every line would cost more than reading them).
        if self.awaitingReply, !self.reported.contains(.r30), self.advertises("PIPELINING") != true,
            self.pickupBox == nil || self.capabilities != nil
        {
            self.reportOnce(
                .r30,
                Anomaly(
                    .pipelining,
                    .client,
                    self.capabilities != nil
                        ? "the client pipelined \"\(parsed.keyword)\" although the server's CAPA does not list PIPELINING"
                        : self.pending.contains(where: { $0.command == .capa })
                            ? "the client pipelined \"\(parsed.keyword)\" before CAPA's reply could say whether PIPELINING is offered"
                            : "the client pipelined \"\(parsed.keyword)\" without having seen PIPELINING in CAPA (it did not ask)"
                ),
                into: &events
            )
        }
        if let command = parsed.command {
            self.checkBeforeSending(command, into: &events)
        }

        let opensSASL: Bool
        if case .auth(let mechanism?, let initial)? = parsed.command {
            opensSASL = true
            self.saslIdentity = nil
            if let initial, initial.revealedString != "=", let decoded = Data(base64Encoded: initial.revealedString) {
                if mechanism == "PLAIN" {
                    self.saslIdentity = self.plainUser(decoded)
                } else if mechanism == "LOGIN" {
                    self.saslIdentity = String(decoding: decoded, as: UTF8.self)
                }
            }
        } else {
            opensSASL = false
        }
        self.enqueue(PendingCommand(verb: parsed.keyword, command: parsed.command, opensSASL: opensSASL), into: &events)

        switch parsed.command {
        case .stls?:
            self.clientMode = .heldAfterSTLS(ByteBuffer())
        case .quit?:
            self.quitSent = true
        default:
            break
        }
        return parsed
    }

    private mutating func enqueue(_ command: PendingCommand, into events: inout [ConversationEvent]) {
        self.pending.append(command)
        if self.pending.count == self.configuration.pendingCommandLimit + 1 {
            self.report(
                Anomaly(
                    .pendingCommands,
                    .client,
                    "more than \(self.configuration.pendingCommandLimit) commands wait for replies"
                ),
                into: &events
            )
        }
    }

    /// R35, once per session.
    private mutating func reportCleartextLogin(_ what: String, into events: inout [ConversationEvent]) {
        self.reportOnce(
            .r35,
            Anomaly(
                .cleartextLogin,
                .client,
                "\(what) without TLS: the password crosses the network in clear (RFC 8314 §4.1)"
            ),
            into: &events
        )
    }

    /// Findings that depend only on what the client knew when it sent the command.
    private mutating func checkBeforeSending(_ command: Command, into events: inout [ConversationEvent]) {
        let cleartext = !self.tlsActive
        switch command {
        case .user(let name):
            if name.utf8.count > self.configuration.userNameLimit {
                self.report(
                    Anomaly(
                        .lengthCaps,
                        .client,
                        "a user name of \(name.utf8.count) characters, over the cap of \(self.configuration.userNameLimit)"
                    ),
                    into: &events
                )
            }
            if cleartext {
                self.reportCleartextLogin("a login", into: &events)
            }
        case .pass(let password):
            if password.octets > self.configuration.passwordLimit {
                self.report(
                    Anomaly(
                        .lengthCaps,
                        .client,
                        "a password longer than the cap of \(self.configuration.passwordLimit)"
                    ),
                    into: &events
                )
            }
            if cleartext {
                self.reportCleartextLogin("a login", into: &events)
            }
        case .apop:
            if !self.greetingStamped, self.state != .greeting, self.pickupBox == nil {
                self.report(
                    Anomaly(.apop, .client, "APOP needs a timestamp in the greeting, and this greeting has none"),
                    into: &events
                )
            }
            self.reportOnce(
                .r26Weak,
                Anomaly(
                    .apop,
                    .client,
                    "APOP relies on MD5, which is weak; prefer TLS with a SASL mechanism",
                    severity: .security
                ),
                into: &events
            )
        case .auth(let mechanism?, _):
            if cleartext, mechanism == "PLAIN" || mechanism == "LOGIN" {
                self.reportCleartextLogin("AUTH \(mechanism)", into: &events)
            }
            if let sasl = self.capabilities?.first(where: { $0.name == "SASL" }),
                !sasl.parameters.contains(where: { $0.uppercased() == mechanism })
            {
                self.report(
                    Anomaly(.saslMechanism, .client, "AUTH \(mechanism) is not among the mechanisms CAPA listed"),
                    into: &events
                )
            }
            if !self.capaSinceTLS {
                self.reportOnce(
                    .r33,
                    Anomaly(
                        .capabilitiesAfterTLS,
                        .client,
                        "after TLS the client must issue CAPA again before relying on capabilities"
                    ),
                    into: &events
                )
            }
        case .stls:
            // STLS without CAPA first is legal: RFC 2595 §4 obliges the server to offer CAPA, not the client to
            // ask. Only a CAPA seen without STLS in it is worth a note.
            if self.advertises("STLS") == false {
                self.report(
                    Anomaly(.stlsAdvertised, .client, "STLS was used although the CAPA seen does not list it"),
                    into: &events
                )
            }
        case .utf8:
            if self.advertises("UTF8") == false {
                self.report(
                    Anomaly(.utf8Command, .client, "UTF8 was used although CAPA did not advertise it"),
                    into: &events
                )
            }
        case .top:
            if self.advertises("TOP") == false {
                self.report(
                    Anomaly(.capability, .client, "TOP was used although CAPA did not advertise it"),
                    into: &events
                )
            }
        default:
            break
        }
    }
}

/// A client line as the gateway's cursor read it: framed and parsed once, by the conversation machine.
public struct ClientLine: Sendable {
    public enum Kind: Sendable {
        /// A command; `refusal` says why a gateway must not forward it (control characters, no keyword).
        case command(ParsedCommand, refusal: String?)
        /// A line of an open SASL exchange (RFC 5034 §4); `cancel` for the client's `*`.
        case saslResponse(cancel: Bool)
        /// A line over the limit in force; only its first octets were kept. `inSASL`: a SASL response.
        case tooLong(octets: Int, limit: Int, inSASL: Bool = false)
    }

    public var kind: Kind
    /// The line without its ending; for an over-long line, the octets kept.
    public var content: ByteBuffer
    public var ending: LineFramer.Ending = .crlf
}

/// What the gateway's cursor found in the client's bytes.
public enum ClientStep: Sendable {
    case line(ClientLine)
    /// No whole line: nothing was taken, or only part of an over-long line.
    case needMoreData
    /// STLS waits for its reply: what follows it must wait too (RFC 2595 §4). Nothing was taken.
    case waitForReply
    /// The machine does not read client lines now (TLS): the bytes are the caller's to pass, and to count with
    /// ``ConversationMachine/clientSent(_:at:into:)``.
    case unread
}
