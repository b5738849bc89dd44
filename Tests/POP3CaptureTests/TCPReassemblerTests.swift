import NIOCore
import Testing

@testable import POP3Capture

@Suite("TCP reassembly")
struct TCPReassemblerTests {
    /// Feeds (sequence, text) segments after a SYN at 999 and returns what comes out, finish included.
    func run(_ segments: [(UInt32, String)], limit: Int = 1 << 20) -> ([TCPReassembler.Output], TCPReassembler) {
        var stream = TCPReassembler(limit: limit)
        stream.syn(999)
        var out: [TCPReassembler.Output] = []
        for (sequence, text) in segments { out += stream.segment(sequence, ByteBuffer(string: text)) }
        out += stream.finish()
        return (out, stream)
    }

    func text(_ outputs: [TCPReassembler.Output]) -> String {
        outputs.map { output in
            switch output {
            case .data(let bytes): String(buffer: bytes)
            case .gap(let n): "<gap \(n)>"
            }
        }.joined()
    }

    @Test("in-order segments come out as they are")
    func inOrder() {
        let (out, stream) = self.run([(1000, "USER a\r\n"), (1008, "PASS b\r\n")])
        #expect(self.text(out) == "USER a\r\nPASS b\r\n")
        #expect(stream.retransmissions == 0 && stream.gaps == 0)
    }

    @Test("the in-order shortcut takes only the next octets with nothing waiting; segment() decides the rest")
    func inOrderShortcut() {
        var stream = TCPReassembler()
        stream.syn(999)
        let first = stream.inOrder(1000, length: 8)
        let again = stream.inOrder(1000, length: 8)
        let pastHole = stream.inOrder(1009, length: 4)
        let empty = stream.inOrder(1008, length: 0)
        #expect(first)
        #expect(!again, "a retransmission is not new")
        #expect(!pastHole, "past a hole")
        #expect(!empty, "nothing to deliver")
        // Something waits behind a hole: in-order octets must go through segment(), which delivers both.
        let held = stream.segment(1012, ByteBuffer(string: "xyz"))
        let whileWaiting = stream.inOrder(1008, length: 4)
        let filled = stream.segment(1008, ByteBuffer(string: "abcd"))
        let after = stream.inOrder(1015, length: 1)
        #expect(held.isEmpty)
        #expect(!whileWaiting)
        #expect(self.text(filled) == "abcdxyz")
        #expect(after)
        // Seen from the middle (no SYN): the first segment is segment()'s.
        var midway = TCPReassembler()
        let unknown = midway.inOrder(5000, length: 3)
        #expect(!unknown)
    }

    @Test("reordered segments are put back in order")
    func reordered() {
        let (out, _) = self.run([(1008, "PASS b\r\n"), (1004, " a\r\n"), (1000, "USER")])
        #expect(self.text(out) == "USER a\r\nPASS b\r\n")
    }

    @Test("a duplicated segment is dropped and counted")
    func duplicated() {
        let (out, stream) = self.run([(1000, "USER a\r\n"), (1000, "USER a\r\n"), (1008, "QUIT\r\n")])
        #expect(self.text(out) == "USER a\r\nQUIT\r\n")
        #expect(stream.retransmissions == 1)
    }

    @Test("an overlapping segment adds only its new octets")
    func overlapping() {
        let (out, stream) = self.run([(1000, "USER a\r\n"), (1004, " a\r\nQUIT\r\n")])
        #expect(self.text(out) == "USER a\r\nQUIT\r\n")
        #expect(stream.retransmissions == 1)
    }

    @Test("two different copies of a waiting segment: the first wins and the conflict is counted")
    func conflict() {
        let (out, stream) = self.run([(1004, "AAAA"), (1004, "BBBB"), (1000, "1234")])
        #expect(self.text(out) == "1234AAAA")
        #expect(stream.conflicts == 1)
    }

    @Test("a hole that never fills is a gap of its size")
    func missing() {
        let (out, stream) = self.run([(1000, "USER a\r\n"), (1020, "QUIT\r\n")])
        #expect(self.text(out) == "USER a\r\n<gap 12>QUIT\r\n")
        #expect(stream.gaps == 1)
    }

    @Test("waiting data past the limit gives up the hole and reports it")
    func limit() {
        let (out, stream) = self.run([(1100, String(repeating: "x", count: 64)), (1000, "ok")], limit: 32)
        #expect(self.text(out).hasPrefix("<gap 100>"))
        #expect(stream.limitHits == 1)
    }

    @Test("a connection seen from the middle starts at its first segment, across sequence wrap-around")
    func middle() {
        var stream = TCPReassembler()
        var out = stream.segment(UInt32.max - 3, ByteBuffer(string: "abcd"))
        out += stream.segment(0, ByteBuffer(string: "efgh"))
        #expect(self.text(out) == "abcdefgh")
    }

    @Test("a hole the peer acknowledged: given up at once when the peer sends data, after a few bare ACKs otherwise")
    func acknowledgedHole() {
        var stream = TCPReassembler(limit: 1 << 20)
        stream.syn(999)
        var out: [TCPReassembler.Output] = []
        stream.segment(1000, ByteBuffer(string: "USER a\r\n"), into: &out)
        // PASS b\r\n (1008..1016) is lost; QUIT\r\n waits behind the hole.
        stream.segment(1016, ByteBuffer(string: "QUIT\r\n"), into: &out)
        #expect(self.text(out) == "USER a\r\n")
        for _ in 0..<3 { stream.acknowledged(1022, into: &out) }
        #expect(self.text(out) == "USER a\r\n", "a bare ACK or three: the capture may still show the segment")
        stream.acknowledged(1022, into: &out)
        #expect(self.text(out) == "USER a\r\n<gap 8>QUIT\r\n")
        // With data of its own, the acknowledging segment cannot wait.
        var eager = TCPReassembler(limit: 1 << 20)
        eager.syn(999)
        var now: [TCPReassembler.Output] = []
        eager.segment(1000, ByteBuffer(string: "USER a\r\n"), into: &now)
        eager.acknowledged(1016, now: true, into: &now)
        #expect(self.text(now) == "USER a\r\n<gap 8>")
        // A segment that fills the hole before then is read as usual.
        var filled = TCPReassembler(limit: 1 << 20)
        filled.syn(999)
        var kept: [TCPReassembler.Output] = []
        filled.segment(1008, ByteBuffer(string: "PASS b\r\n"), into: &kept)
        filled.acknowledged(1016, into: &kept)
        filled.segment(1000, ByteBuffer(string: "USER a\r\n"), into: &kept)
        #expect(self.text(kept) == "USER a\r\nPASS b\r\n" && filled.gaps == 0)
        // The FIN's sequence number is not a missing octet.
        var closing = TCPReassembler(limit: 1 << 20)
        closing.syn(999)
        var end: [TCPReassembler.Output] = []
        closing.segment(1000, ByteBuffer(string: "QUIT\r\n"), into: &end)
        closing.fin(1006)
        closing.acknowledged(1007, now: true, into: &end)
        #expect(closing.gaps == 0)
    }
}
