import NIOCore
import POP3Core

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One session of the embedded server: the server's side of RFC 1939, with CAPA, TOP, UIDL,
/// RESP-CODES, PIPELINING and SASL PLAIN and LOGIN. Pure: lines in, reply bytes out; the handler does the I/O.
struct ServerSession {
    enum State {
        case authorization(user: String?)
        /// An AUTH exchange waits for the client's next response line.
        case sasl(SASLStep)
        case transaction(Transaction)
        case closed
    }

    enum SASLStep {
        /// PLAIN without an initial response: the whole response comes next.
        case plain
        /// LOGIN (draft-murchison-sasl-login): the user name, then the password, each after a challenge.
        case loginUser
        case loginPassword(user: String)
    }

    struct Transaction {
        var user: String
        var messages: [StoredMessage]
        var deleted: Set<Int> = []

        func message(_ n: Int) -> StoredMessage? {
            guard n >= 1, n <= self.messages.count, !self.deleted.contains(n) else { return nil }
            return self.messages[n - 1]
        }

        var live: [(Int, StoredMessage)] {
            self.messages.enumerated().compactMap {
                self.deleted.contains($0.offset + 1) ? nil : ($0.offset + 1, $0.element)
            }
        }
    }

    /// What a line leads to.
    struct Outcome {
        var reply: ByteBuffer
        /// A body written after the reply line without copying it.
        var body: ByteBuffer? = nil
        var close = false
    }

    static let capabilities = [
        "TOP", "USER", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "SASL PLAIN LOGIN",
        "IMPLEMENTATION popgate-embedded",
    ]

    private(set) var state: State = .authorization(user: nil)
    let store: MailStore
    /// The APOP timestamp of this session's greeting (RFC 1939 §7).
    let timestamp: String

    init(store: MailStore, timestamp: String) {
        self.store = store
        self.timestamp = timestamp
    }

    var greeting: ByteBuffer {
        var out = ByteBuffer()
        out.writeReply(.ok("popgate embedded POP3 server ready \(self.timestamp)"))
        return out
    }

    // MARK: - Lines

    mutating func received(line: ByteBuffer) -> Outcome {
        if case .sasl(let step) = self.state { return self.saslResponse(line, step: step) }
        let parsed = CommandParser.parse(line.readableBytesView)
        guard let command = parsed.command else {
            return self.reply(.err("\(parsed.keyword) with those arguments is not a valid command"))
        }
        switch self.state {
        case .authorization(let user):
            return self.authorization(command, user: user)
        case .transaction(var transaction):
            let outcome = self.transaction(command, &transaction)
            if case .transaction = self.state { self.state = .transaction(transaction) }
            return outcome
        case .sasl, .closed:
            return self.reply(.err("the session is over"), close: true)
        }
    }

    /// The client vanished: release the lock without committing anything (RFC 1939 §6).
    mutating func abandoned() {
        if case .transaction(let transaction) = self.state {
            self.store.release(user: transaction.user, deleting: [])
        }
        self.state = .closed
    }

    /// An over-long line: refuse it, keep the session.
    func tooLong(octets: Int) -> Outcome {
        self.reply(.err("line of \(octets) octets is too long; the limit is \(POP3Defaults.commandLineLimit)"))
    }

    // MARK: - AUTHORIZATION

    private mutating func authorization(_ command: Command, user: String?) -> Outcome {
        switch command {
        case .capa:
            return self.capa()
        case .user(let name):
            self.state = .authorization(user: name)
            return self.reply(.ok("\(name) may now send the password with PASS"))
        case .pass(let password):
            guard let user else {
                return self.reply(.err("USER first"))
            }
            return self.login(user: user, result: self.store.login(user: user, password: password.revealedString))
        case .apop(let name, let digest):
            let stamp = self.timestamp
            let result = self.store.login(user: name) { secret in
                APOP.digest(timestamp: stamp, secret: secret) == digest.revealedString
            }
            return self.login(user: name, result: result)
        case .auth(nil, _):
            var out = ByteBuffer()
            out.writeReply(.ok("SASL mechanisms follow"))
            out.writeString("PLAIN\r\nLOGIN\r\n.\r\n")
            return Outcome(reply: out)
        case .auth("PLAIN", let initial):
            if let initial {
                return self.plain(initial.revealed)
            }
            return self.challenge(.plain, "")
        case .auth("LOGIN", let initial):
            if let initial {
                return self.saslResponse(ByteBuffer(bytes: initial.revealed), step: .loginUser)
            }
            return self.challenge(.loginUser, "VXNlcm5hbWU6")  // "Username:"
        case .auth(let mechanism?, _):
            self.state = .authorization(user: nil)
            return self.reply(.err("\(mechanism) is not supported; use PLAIN or LOGIN"))
        case .quit:
            self.state = .closed
            return self.reply(.ok("popgate embedded server signing off"), close: true)
        case .stls:
            return self.reply(.err("STLS is not available on the embedded server"))
        case .utf8, .lang:
            return self.reply(.err("\(command.keyword) is not supported here"))
        case .other(let keyword, _):
            return self.reply(.err("unknown command \(Self.visible(keyword))"))
        default:
            return self.reply(.err("\(command.keyword) is valid only in the TRANSACTION state; log in first"))
        }
    }

    private mutating func challenge(_ step: SASLStep, _ text: String) -> Outcome {
        self.state = .sasl(step)
        var out = ByteBuffer()
        out.writeReply(Reply(.continuation, text))
        return Outcome(reply: out)
    }

    private mutating func saslResponse(_ line: ByteBuffer, step: SASLStep) -> Outcome {
        let text = String(buffer: line)
        if text == "*" {
            self.state = .authorization(user: nil)
            return self.reply(.err("AUTH cancelled"))
        }
        guard let decoded = Data(base64Encoded: text) else {
            self.state = .authorization(user: nil)
            return self.reply(.err("invalid base64 in the SASL response"))
        }
        switch step {
        case .plain:
            return self.plain(Array(decoded), decoded: true)
        case .loginUser:
            return self.challenge(.loginPassword(user: String(decoding: decoded, as: UTF8.self)), "UGFzc3dvcmQ6")
        case .loginPassword(let user):
            let password = String(decoding: decoded, as: UTF8.self)
            return self.login(user: user, result: self.store.login(user: user, password: password))
        }
    }

    /// RFC 4616: `authzid NUL authcid NUL passwd`.
    private mutating func plain(_ payload: [UInt8], decoded: Bool = false) -> Outcome {
        var bytes = payload
        if !decoded {
            guard let data = Data(base64Encoded: String(decoding: payload, as: UTF8.self)) else {
                self.state = .authorization(user: nil)
                return self.reply(.err("invalid base64 in the initial response"))
            }
            bytes = Array(data)
        }
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            self.state = .authorization(user: nil)
            return self.reply(.err("malformed PLAIN response"))
        }
        let user = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        return self.login(user: user, result: self.store.login(user: user, password: password))
    }

    private mutating func login(user: String, result: Result<[StoredMessage], MailStore.LoginFailure>) -> Outcome {
        switch result {
        case .success(let messages):
            let transaction = Transaction(user: user, messages: messages)
            self.state = .transaction(transaction)
            let octets = messages.reduce(0) { $0 + $1.size }
            return self.reply(.ok("\(user)'s maildrop has \(messages.count) messages (\(octets) octets)"))
        case .failure(.inUse):
            self.state = .authorization(user: nil)
            return self.reply(.err("maildrop already locked by another session", code: .inUse))
        case .failure(.badCredentials):
            self.state = .authorization(user: nil)
            return self.reply(.err("invalid user name or password", code: .auth))
        }
    }

    // MARK: - TRANSACTION

    private mutating func transaction(_ command: Command, _ t: inout Transaction) -> Outcome {
        switch command {
        case .capa:
            return self.capa()
        case .stat:
            let live = t.live
            return self.reply(.ok("\(live.count) \(live.reduce(0) { $0 + $1.1.size })"))
        case .list(nil):
            let live = t.live
            var out = ByteBuffer()
            out.writeReply(.ok("\(live.count) messages (\(live.reduce(0) { $0 + $1.1.size }) octets)"))
            for (n, message) in live { out.writeString("\(n) \(message.size)\r\n") }
            out.writeString(".\r\n")
            return Outcome(reply: out)
        case .list(let n?):
            guard let message = t.message(n) else { return self.noSuchMessage(n, t) }
            return self.reply(.ok("\(n) \(message.size)"))
        case .uidl(nil):
            var out = ByteBuffer()
            out.writeReply(.ok("unique-id listing follows"))
            for (n, message) in t.live { out.writeString("\(n) \(message.uniqueID)\r\n") }
            out.writeString(".\r\n")
            return Outcome(reply: out)
        case .uidl(let n?):
            guard let message = t.message(n) else { return self.noSuchMessage(n, t) }
            return self.reply(.ok("\(n) \(message.uniqueID)"))
        case .retr(let n):
            guard let message = t.message(n) else { return self.noSuchMessage(n, t) }
            var out = ByteBuffer()
            out.writeReply(.ok("\(message.size) octets"))
            return Outcome(reply: out, body: message.stuffed)
        case .top(let n, let lines):
            guard let message = t.message(n) else { return self.noSuchMessage(n, t) }
            var out = ByteBuffer()
            out.writeReply(.ok("top of message \(n) follows"))
            DotStuffing.writeBody(message.bytes, into: &out, maxBodyLines: lines)
            return Outcome(reply: out)
        case .dele(let n):
            guard t.message(n) != nil else { return self.noSuchMessage(n, t) }
            t.deleted.insert(n)
            return self.reply(.ok("message \(n) deleted"))
        case .noop:
            return self.reply(.ok())
        case .rset:
            t.deleted.removeAll()
            return self.reply(
                .ok("maildrop has \(t.messages.count) messages (\(t.messages.reduce(0) { $0 + $1.size }) octets)")
            )
        case .quit:
            let uids = Set(t.deleted.map { t.messages[$0 - 1].uniqueID })
            self.store.release(user: t.user, deleting: uids)
            self.state = .closed
            let left = t.messages.count - t.deleted.count
            return self.reply(.ok("popgate embedded server signing off (\(left) messages left)"), close: true)
        case .other(let keyword, _):
            return self.reply(.err("unknown command \(Self.visible(keyword))"))
        case .user, .pass, .apop, .auth, .stls, .utf8:
            return self.reply(.err("\(command.keyword) is valid only in the AUTHORIZATION state"))
        case .lang:
            return self.reply(.err("LANG is not supported here"))
        }
    }

    private func noSuchMessage(_ n: Int, _ t: Transaction) -> Outcome {
        if t.deleted.contains(n) { return self.reply(.err("message \(n) already deleted")) }
        return self.reply(.err("no such message, only \(t.messages.count) messages in maildrop"))
    }

    private func capa() -> Outcome {
        var out = ByteBuffer()
        out.writeReply(.ok("capability list follows"))
        for capability in Self.capabilities { out.writeString(capability + "\r\n") }
        out.writeString(".\r\n")
        return Outcome(reply: out)
    }

    private func reply(_ reply: Reply, close: Bool = false) -> Outcome {
        var out = ByteBuffer()
        out.writeReply(reply)
        return Outcome(reply: out, close: close)
    }

    /// A keyword echoed back without control characters.
    static func visible(_ text: String) -> String {
        String(text.unicodeScalars.filter { $0.value > 0x20 && $0.value < 0x7F }.prefix(20))
    }
}
