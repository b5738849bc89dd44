import Testing

@testable import POP3Core

@Suite("Inline queue")
struct InlineQueueTests {
    @Test("first in, first out, across the inline slot and the storage behind it")
    func order() {
        var queue = InlineQueue<Int>()
        #expect(queue.isEmpty && queue.isEmpty == true && queue.count == 0 && queue.first == nil)
        for n in 1...5 { queue.append(n) }
        #expect(Array(queue) == [1, 2, 3, 4, 5] && queue.count == 5 && queue.last == 5)
        #expect(queue.removeFirst() == 1)
        queue.append(6)
        #expect(Array(queue) == [2, 3, 4, 5, 6])
        var taken: [Int] = []
        while !queue.isEmpty { taken.append(queue.removeFirst()) }
        #expect(taken == [2, 3, 4, 5, 6] && queue.count == 0)
        #expect(queue.last == nil)
        queue.append(7)
        #expect(Array(queue) == [7] && queue.indices == 0..<1 && queue.last == 7)
        queue.append(8)
        #expect(queue.last == 8 && queue.removeFirst() == 7 && queue.last == 8)
    }

    @Test("an element changes in place, in the inline slot and behind it")
    func change() {
        var queue = InlineQueue<Int>()
        queue.append(1)
        queue.append(2)
        queue[0] += 10
        queue[1] += 20
        #expect(Array(queue) == [11, 22])
        queue.removeAll()
        #expect(queue.isEmpty && Array(queue) == [])
    }

    @Test("a copy is a value: changing one leaves the other")
    func value() {
        var queue = InlineQueue<String>()
        queue.append("a")
        queue.append("b")
        var copy = queue
        copy[1] = "c"
        copy.append("d")
        #expect(Array(queue) == ["a", "b"] && Array(copy) == ["a", "c", "d"])
    }
}
