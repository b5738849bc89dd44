import NIOCore

/// The replies the client is owed, in the order of its commands (invariant 2).
///
/// Every client line that expects a reply appends a slot: the upstream's reply, or the gateway's own. An upstream
/// reply fills the oldest upstream slot; a gateway reply is written once it reaches the head. So order under
/// pipelining holds by construction: nothing is counted or reconciled.
struct AnswerQueue: Sendable {
    enum Slot: Sendable, Hashable {
        /// The upstream's reply to a forwarded command.
        case upstream
        /// The gateway's own reply (a refused line), written when it reaches the head.
        case local(ByteBuffer)
    }

    private var slots = CircularBuffer<Slot>(initialCapacity: 4)

    var isEmpty: Bool { self.slots.isEmpty }
    var count: Int { self.slots.count }

    /// Whether the upstream still owes a reply.
    var owesUpstream: Bool { self.slots.contains(.upstream) }

    mutating func append(_ slot: Slot) { self.slots.append(slot) }

    /// Whether a reply of the gateway's is at the head, to be written now.
    var localReplyDue: Bool {
        if case .local? = self.slots.first { return true }
        return false
    }

    /// The upstream's reply ended: its slot leaves the head.
    mutating func upstreamAnswered() {
        guard self.slots.first == .upstream else { return }
        self.slots.removeFirst()
    }

    /// The gateway's replies now at the head, taken off in order.
    mutating func takeLocalReplies() -> [ByteBuffer] {
        var replies: [ByteBuffer] = []
        while case .local(let reply)? = self.slots.first {
            replies.append(reply)
            self.slots.removeFirst()
        }
        return replies
    }

    /// The upstream can no longer be followed (not POP3): its slots are given up, the gateway's kept in order.
    mutating func dropUpstream() {
        self.slots.removeAll { $0 == .upstream }
    }

    /// The upstream slots, for answering them when the upstream is gone; every slot is taken off.
    mutating func takeAll() -> [Slot] {
        defer { self.slots.removeAll() }
        return Array(self.slots)
    }
}
