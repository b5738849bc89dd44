import NIOCore

/// The replies the client is owed, in the order of its commands (invariant 2).
///
/// Every client line that expects a reply appends a slot: the upstream's reply, or the gateway's own. An upstream
/// reply fills the oldest upstream slot; a gateway reply is written once it reaches the head. So order under
/// pipelining holds by construction: nothing is counted or reconciled.
///
/// Most sessions never have a reply of the gateway's, so the upstream slots before the first gateway reply are
/// only counted; a buffer is made only once a gateway reply is queued.
struct AnswerQueue: Sendable {
    enum Slot: Sendable, Hashable {
        /// The upstream's reply to a forwarded command.
        case upstream
        /// The gateway's own reply (a refused line), written when it reaches the head.
        case local(ByteBuffer)
        /// The gateway's +OK to STLS: once written, TLS begins, and nothing may follow it in plaintext.
        case startTLS(ByteBuffer)
    }

    /// A reply of the gateway's, taken off the head.
    struct LocalReply: Sendable, Hashable {
        var bytes: ByteBuffer
        var startsTLS: Bool
    }

    /// Upstream slots at the head, before `rest`.
    private var upstreamAhead = 0
    /// From the first gateway reply on; nil when there is none.
    private var rest: CircularBuffer<Slot>?

    var isEmpty: Bool { self.upstreamAhead == 0 && self.rest == nil }
    var count: Int { self.upstreamAhead + (self.rest?.count ?? 0) }

    /// Whether the upstream still owes a reply.
    var owesUpstream: Bool { self.upstreamAhead > 0 || self.rest?.contains(.upstream) == true }

    /// Whether a reply of the gateway's is at the head, to be written now.
    var localReplyDue: Bool {
        guard self.upstreamAhead == 0, let first = self.rest?.first, first != .upstream else { return false }
        return true
    }

    mutating func append(_ slot: Slot) {
        if self.rest == nil, slot == .upstream {
            self.upstreamAhead += 1
        } else {
            self.rest = self.rest ?? CircularBuffer(initialCapacity: 4)
            self.rest!.append(slot)
        }
    }

    /// The upstream's reply ended: its slot leaves the head.
    mutating func upstreamAnswered() {
        if self.upstreamAhead > 0 { self.upstreamAhead -= 1 }
    }

    /// The gateway's replies now at the head, taken off in order.
    mutating func takeLocalReplies() -> [LocalReply] {
        guard self.upstreamAhead == 0, self.rest != nil else { return [] }
        var replies: [LocalReply] = []
        loop: while let first = self.rest!.first {
            switch first {
            case .local(let reply):
                replies.append(LocalReply(bytes: reply, startsTLS: false))
            case .startTLS(let reply):
                replies.append(LocalReply(bytes: reply, startsTLS: true))
                self.rest!.removeFirst()
                break loop
            case .upstream:
                break loop
            }
            self.rest!.removeFirst()
        }
        self.normalize()
        return replies
    }

    /// The upstream can no longer be followed (not POP3): its slots are given up, the gateway's kept in order.
    mutating func dropUpstream() {
        self.upstreamAhead = 0
        self.rest?.removeAll { $0 == .upstream }
        self.normalize()
    }

    /// Every slot, in order, for answering them when the upstream is gone; the queue is left empty.
    mutating func takeAll() -> [Slot] {
        defer { self = AnswerQueue() }
        return Array(repeating: .upstream, count: self.upstreamAhead) + Array(self.rest ?? [])
    }

    /// Upstream slots at the head of `rest` are counted again; an empty `rest` is let go.
    private mutating func normalize() {
        while self.rest?.first == .upstream {
            self.rest!.removeFirst()
            self.upstreamAhead += 1
        }
        if self.rest?.isEmpty == true { self.rest = nil }
    }
}
