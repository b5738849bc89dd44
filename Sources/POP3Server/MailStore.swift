import NIOConcurrencyHelpers
import NIOCore
import POP3Core

/// A message in a maildrop.
public struct StoredMessage: Sendable, Hashable {
    /// The unique id UIDL reports; it stays the same across sessions (RFC 1939 §7).
    public var uniqueID: String
    public var bytes: [UInt8]
    /// Octets with CRLF line endings, as LIST and STAT report them (RFC 1939 §11).
    public var size: Int
    /// The message as RETR sends it: byte-stuffed, with its terminating line; made once, sent as often as asked.
    public var stuffed: ByteBuffer

    public init(uniqueID: String, bytes: [UInt8]) {
        self.uniqueID = uniqueID
        self.bytes = bytes
        self.size = DotStuffing.octets(of: bytes)
        var stuffed = ByteBuffer()
        stuffed.reserveCapacity(bytes.count + bytes.count / 16 + 8)
        DotStuffing.writeBody(bytes, into: &stuffed)
        self.stuffed = stuffed
    }
}

/// The maildrops of the embedded server, with a lock per maildrop (RFC 1939 §4) and deletions
/// committed only by a session that ends with QUIT (RFC 1939 §6).
public final class MailStore: Sendable {
    struct Mailbox {
        var password: String
        var messages: [StoredMessage]
        var locked = false
    }

    public enum LoginFailure: Error, Sendable, Equatable {
        case badCredentials
        case inUse
    }

    private let mailboxes: NIOLockedValueBox<[String: Mailbox]>

    /// Every user gets their own copy of `messages`.
    public init(users: [String: String], messages: [StoredMessage]) {
        var boxes: [String: Mailbox] = [:]
        for (name, password) in users {
            boxes[name] = Mailbox(password: password, messages: messages)
        }
        self.mailboxes = NIOLockedValueBox(boxes)
    }

    /// Checks the password and locks the maildrop; returns its messages.
    public func login(user: String, password: String) -> Result<[StoredMessage], LoginFailure> {
        self.login(user: user) { $0 == password }
    }

    /// Checks an APOP digest against the user's secret and locks the maildrop.
    public func login(user: String, check: (String) -> Bool) -> Result<[StoredMessage], LoginFailure> {
        self.mailboxes.withLockedValue { boxes in
            guard var box = boxes[user], check(box.password) else { return .failure(.badCredentials) }
            guard !box.locked else { return .failure(.inUse) }
            box.locked = true
            boxes[user] = box
            return .success(box.messages)
        }
    }

    /// Releases the lock, removing the messages whose unique ids are in `deleting` (empty unless QUIT).
    public func release(user: String, deleting: Set<String>) {
        self.mailboxes.withLockedValue { boxes in
            guard var box = boxes[user] else { return }
            box.messages.removeAll { deleting.contains($0.uniqueID) }
            box.locked = false
            boxes[user] = box
        }
    }

    /// Whether a session holds the user's maildrop.
    public func isLocked(_ user: String) -> Bool {
        self.mailboxes.withLockedValue { $0[user]?.locked ?? false }
    }

    /// The messages a user has now, for tests and the demo.
    public func messages(of user: String) -> [StoredMessage] {
        self.mailboxes.withLockedValue { $0[user]?.messages ?? [] }
    }
}
