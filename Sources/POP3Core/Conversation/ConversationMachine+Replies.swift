extension ConversationMachine {
    // MARK: - Judging a reply against its command

    /// The rule a command breaks by being sent in `state`, if any (R12, R13, R15, R31, R32, R37, R46).
    static func stateViolation(_ command: Command, in state: ConversationState, tlsActive: Bool) -> Anomaly? {
        let inAuthorization = state.isAuthorization
        let name = state.displayName
        switch command {
        case .user:
            if !inAuthorization {
                return Anomaly(.authorizationOnly, .client, "USER is valid only in AUTHORIZATION, not in \(name)")
            }
            if state == .userAccepted {
                return Anomaly(.loginSequence, .client, "USER came right after a successful USER")
            }
        case .pass:
            if !inAuthorization {
                return Anomaly(
                    .authorizationOnly,
                    .client,
                    "the password (PASS) is valid only in AUTHORIZATION, not in \(name)"
                )
            }
            if state != .userAccepted {
                return Anomaly(.loginSequence, .client, "the password (PASS) must come right after a successful USER")
            }
        case .apop:
            if !inAuthorization {
                return Anomaly(.authorizationOnly, .client, "APOP is valid only in AUTHORIZATION, not in \(name)")
            }
            if state == .userAccepted { return Anomaly(.loginSequence, .client, "APOP came after a successful USER") }
        case .auth:
            if !inAuthorization {
                return Anomaly(.authCommand, .client, "AUTH is not allowed once the session is authenticated")
            }
        case .stls:
            if tlsActive { return Anomaly(.stlsUnderTLS, .client, "STLS while TLS is already active") }
            if !inAuthorization {
                return Anomaly(
                    .stls,
                    .client,
                    "STLS is valid only in AUTHORIZATION, not in \(name)",
                    severity: .violation
                )
            }
        case .utf8:
            if !inAuthorization {
                return Anomaly(.utf8Command, .client, "UTF8 is valid only in AUTHORIZATION, not in \(name)")
            }
        case .stat, .list, .retr, .dele, .noop, .rset, .top, .uidl:
            if state != .transaction {
                return Anomaly(
                    .transactionOnly,
                    .client,
                    "\(command.keyword) is valid only in TRANSACTION, and the session is in \(name)"
                )
            }
        case .quit, .capa, .lang, .other:
            break
        }
        return nil
    }

    /// Collects what `reply` shows about the client's command and the server's answer.
    mutating func checkReply(
        _ reply: Reply,
        to pending: PendingCommand,
        state: ConversationState,
        findings: inout [Anomaly]
    ) {
        let ok = reply.status == .ok
        guard let command = pending.command else {
            if ok {
                findings.append(
                    Anomaly(
                        .errorRequired,
                        .server,
                        "the server accepted a malformed \(pending.verb); it must answer -ERR"
                    )
                )
            }
            return
        }
        // A guessed state flags nothing (a session picked up mid-way, before a reply has shown where it is).
        if self.pickupBox?.value.stateGuessed != true,
            let violation = Self.stateViolation(command, in: state, tlsActive: self.tlsActive)
        {
            findings.append(violation)
            if ok {
                let rule: Rule = violation.rule == .stlsUnderTLS ? .stlsUnderTLS : .errorRequired
                findings.append(
                    Anomaly(
                        rule,
                        .server,
                        "the server accepted \(pending.verb) in \(state.displayName); it must answer -ERR"
                    )
                )
            }
        }
        if let n = command.messageNumber, self.maildrop.isDeleted(n) {
            findings.append(
                Anomaly(.deletedMessage, .client, "\(pending.verb) refers to message \(n), which is marked deleted")
            )
            if ok {
                findings.append(
                    Anomaly(
                        .deletedMessage,
                        .server,
                        "the server accepted \(pending.verb) \(n) although message \(n) is marked deleted"
                    )
                )
            }
        }
        if pending.cancelled, ok {
            findings.append(Anomaly(.saslChallenge, .server, "after \"*\" the server must answer -ERR"))
        }
        // A bare AUTH (the legacy probe, R42) may get -ERR or a listing: neither is reported.

        if let code = reply.code {
            let level = code.levels.first?.uppercased() ?? ""
            if ok, ["IN-USE", "LOGIN-DELAY"].contains(level) {
                findings.append(Anomaly(.lockAndDelay, .server, "[\(code)] goes with -ERR"))
            }
            if ok, ["SYS", "AUTH"].contains(level) {
                findings.append(Anomaly(.systemCodes, .server, "[\(code)] goes with -ERR"))
            }
            if self.advertises("RESP-CODES") == false, !(level == "AUTH" && self.advertises("AUTH-RESP-CODE") == true) {
                findings.append(
                    Anomaly(.responseCode, .server, "a response code although CAPA did not advertise RESP-CODES")
                )
            }
            if level == "LOGIN-DELAY", self.advertises("LOGIN-DELAY") == false {
                findings.append(Anomaly(.lockAndDelay, .server, "[LOGIN-DELAY] without the LOGIN-DELAY capability"))
            }
        }
        guard ok else { return }

        // Only these replies have fields to read; most replies are free text, not split.
        func fields() -> CommandParser.Fields { CommandParser.fields(reply.text) }
        switch command {
        case .stat:
            let fields = fields()
            guard fields.count >= 2, let count = CommandParser.decimal(fields.first),
                let octets = CommandParser.decimal(fields.second)
            else {
                findings.append(
                    Anomaly(.statFormat, .server, "a STAT reply is +OK, the message count and the size in octets")
                )
                return
            }
            self.maildrop.count = count
            self.maildrop.octets = octets
        case .list(let n?):
            let fields = fields()
            guard fields.count >= 2, CommandParser.messageNumber(fields.first) == n,
                let size = CommandParser.decimal(fields.second)
            else {
                findings.append(
                    Anomaly(.listFormat, .server, "a LIST \(n) reply is +OK, the message number and its size")
                )
                return
            }
            self.maildrop.sizes[n] = size
        case .uidl(let n?):
            let fields = fields()
            guard fields.count >= 2, CommandParser.messageNumber(fields.first) == n else {
                findings.append(
                    Anomaly(.uniqueID, .server, "a UIDL \(n) reply is +OK, the message number and its unique id")
                )
                return
            }
            var events: [ConversationEvent] = []
            self.recordUniqueID(String(decoding: fields.second, as: UTF8.self), for: n, into: &events)
            for case .anomaly(let anomaly) in events { findings.append(anomaly) }
        case .apop:
            if !self.greetingStamped, self.pickupBox == nil {
                findings.append(Anomaly(.apop, .server, "the server accepted APOP without a timestamp in its greeting"))
            }
        default:
            break
        }
    }

    /// The maildrop model follows what the server accepted.
    mutating func applyReply(_ reply: Reply, to pending: PendingCommand) {
        guard reply.status == .ok, let command = pending.command else { return }
        switch command {
        case .dele(let n):
            self.maildrop.deleted.insert(n)
        case .rset:
            self.maildrop.deleted.removeAll()
        case .user(let name):
            self.user = name
        case .apop(let name, _):
            self.user = name
        case .utf8:
            self.utf8Accepted = true
        default:
            break
        }
    }

    // MARK: - State transitions

    mutating func transition(after reply: Reply, to pending: PendingCommand, into events: inout [ConversationEvent]) {
        let ok = reply.status == .ok
        let state = self.state
        switch pending.command {
        case .user?:
            guard state.isAuthorization else { return }
            if ok {
                self.enter(
                    .userAccepted,
                    "the name is accepted; the password (PASS) must come next (RFC 1939 §7).",
                    into: &events
                )
            } else {
                self.enter(
                    .authorization,
                    "the name was refused; the client may try again (RFC 1939 §7).",
                    into: &events
                )
            }
        case .pass?, .apop?, .auth(_?, _)?:
            guard state.isAuthorization else { return }
            if ok {
                self.enter(
                    .transaction,
                    "the maildrop is open and locked; STAT, LIST, RETR, DELE and the rest are allowed (RFC 1939 §5).",
                    into: &events
                )
            } else {
                self.enter(
                    .authorization,
                    "the login failed; the client may try again or QUIT (RFC 1939 §4).",
                    into: &events
                )
            }
        case .stls?:
            if ok {
                if case .heldAfterSTLS(let held) = self.clientMode, held.readableBytes > 0 {
                    self.report(
                        Anomaly(
                            .stls,
                            .client,
                            "\(held.readableBytes) octets of plaintext followed STLS before TLS began; they must be discarded (command injection, CVE-2011-0411)"
                        ),
                        into: &events
                    )
                }
                self.clientMode = .opaque
                self.serverMode = .opaque
                self.enter(
                    .tlsNegotiation,
                    "what follows is a TLS handshake, then encrypted POP3 (RFC 2595 §4).",
                    into: &events
                )
            } else {
                self.resumeAfterRefusedSTLS(into: &events)
            }
        case .quit?:
            if state == .transaction, !ok {
                self.report(
                    Anomaly(.update, .server, "QUIT got -ERR: some messages marked deleted were not removed"),
                    into: &events
                )
            }
            if state == .transaction {
                self.enter(
                    .update,
                    ok
                        ? "the server removes the messages marked deleted (RFC 1939 §6)."
                        : "the server could not remove every marked message (RFC 1939 §6).",
                    into: &events
                )
            }
            if ok { self.enter(.closed, "the session is over.", into: &events) }
        default:
            break
        }
    }

    /// STLS was refused: what the client sent meanwhile was pipelined commands after all.
    private mutating func resumeAfterRefusedSTLS(into events: inout [ConversationEvent]) {
        guard case .heldAfterSTLS(var held) = self.clientMode else { return }
        self.clientMode = .lines
        // A gateway's cursor left those octets with the gateway, which reads them next.
        if self.readByCursor { return }
        self.readClient(&held, into: &events)
    }

    /// A gateway that terminated STLS itself reports that TLS is up: POP3 is readable again, capabilities are
    /// forgotten (RFC 2595 §4), and the session is back in AUTHORIZATION.
    public mutating func tlsEstablished() -> [ConversationEvent] {
        var events: [ConversationEvent] = []
        self.tlsActive = true
        self.capabilities = nil
        self.capaSinceTLS = false
        self.clientMode = .lines
        self.serverMode = .lines
        self.clientFramer.reset()
        self.serverFramer.reset()
        self.enter(.authorization, "TLS is up; earlier capabilities no longer count (RFC 2595 §4).", into: &events)
        return events
    }
}
