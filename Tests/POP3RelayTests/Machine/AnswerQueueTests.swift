import NIOCore
import Testing

@testable import POP3Relay

@Suite("Answer queue")
struct AnswerQueueTests {
    @Test("gateway replies come out when they reach the head, between the upstream's, in order")
    func order() {
        var queue = AnswerQueue()
        let a = ByteBuffer(string: "-ERR a\r\n")
        let b = ByteBuffer(string: "-ERR b\r\n")
        for slot in [AnswerQueue.Slot.upstream, .local(a), .local(b), .upstream, .upstream, .local(a)] {
            queue.append(slot)
        }
        #expect(queue.count == 6 && queue.owesUpstream)
        #expect(queue.takeLocalReplies().isEmpty)
        queue.upstreamAnswered()
        #expect(queue.localReplyDue)
        #expect(queue.takeLocalReplies() == [a, b])
        queue.upstreamAnswered()
        #expect(!queue.localReplyDue)
        queue.upstreamAnswered()
        #expect(queue.takeLocalReplies() == [a])
        #expect(queue.isEmpty && !queue.owesUpstream)
    }

    @Test("not followed any more: the upstream's slots go, the gateway's stay in order")
    func dropUpstream() {
        var queue = AnswerQueue()
        let a = ByteBuffer(string: "-ERR a\r\n")
        for slot in [AnswerQueue.Slot.upstream, .upstream, .local(a), .upstream] { queue.append(slot) }
        queue.dropUpstream()
        #expect(queue.count == 1 && queue.localReplyDue && !queue.owesUpstream)
        #expect(queue.takeAll() == [.local(a)])
        #expect(queue.isEmpty)
    }
}
