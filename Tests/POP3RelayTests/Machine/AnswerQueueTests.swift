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
        #expect(queue.takeLocalReplies().map(\.bytes) == [a, b])
        queue.upstreamAnswered()
        #expect(!queue.localReplyDue)
        queue.upstreamAnswered()
        #expect(queue.takeLocalReplies().map(\.bytes) == [a])
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

    @Test("the gateway's +OK to STLS comes out last of what is due: nothing is taken after it")
    func startTLSEndsTheTake() {
        var queue = AnswerQueue()
        let refusal = ByteBuffer(string: "-ERR a\r\n")
        let begin = ByteBuffer(string: "+OK Begin TLS negotiation\r\n")
        for slot in [AnswerQueue.Slot.upstream, .local(refusal), .startTLS(begin), .local(refusal)] {
            queue.append(slot)
        }
        #expect(queue.takeLocalReplies().isEmpty)
        queue.upstreamAnswered()
        let taken = queue.takeLocalReplies()
        #expect(taken.map(\.bytes) == [refusal, begin] && taken.map(\.startsTLS) == [false, true])
        #expect(queue.localReplyDue && queue.count == 1)
    }
}
