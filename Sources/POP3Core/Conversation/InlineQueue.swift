import struct NIOCore.CircularBuffer

/// A first-in first-out queue that keeps its first element inline and the rest, if any, in storage it lets go
/// of once they are gone: the one command a session usually awaits the reply to costs no allocation, and an idle
/// session holds no storage at all (a ring buffer kept 320 octets for each, after one pipelined login).
struct InlineQueue<Element>: RandomAccessCollection, MutableCollection {
    private var head: Element?
    private var rest: CircularBuffer<Element>?

    init() {}

    var startIndex: Int { 0 }
    var endIndex: Int { self.head == nil ? 0 : 1 + (self.rest?.count ?? 0) }
    var isEmpty: Bool { self.head == nil }
    /// Read on every client line (is a SASL response next?): straight from where it is kept.
    var last: Element? { self.rest?.last ?? self.head }

    subscript(position: Int) -> Element {
        get {
            precondition(position >= 0 && position < self.endIndex, "index out of range")
            return position == 0 ? self.head! : self.rest![offset: position - 1]
        }
        _modify {
            precondition(position >= 0 && position < self.endIndex, "index out of range")
            if position == 0 {
                yield &self.head!
            } else {
                yield &self.rest![offset: position - 1]
            }
        }
    }

    mutating func append(_ element: Element) {
        if self.head == nil {
            self.head = element
        } else if self.rest == nil {
            var rest = CircularBuffer<Element>(initialCapacity: 4)
            rest.append(element)
            self.rest = rest
        } else {
            self.rest!.append(element)
        }
    }

    @discardableResult
    mutating func removeFirst() -> Element {
        guard let first = self.head else { preconditionFailure("removeFirst on an empty queue") }
        if self.rest == nil {
            self.head = nil
        } else {
            self.head = self.rest!.removeFirst()
            if self.rest!.isEmpty { self.rest = nil }
        }
        return first
    }

    mutating func removeAll() {
        self.head = nil
        self.rest = nil
    }
}

extension InlineQueue: Sendable where Element: Sendable {}
