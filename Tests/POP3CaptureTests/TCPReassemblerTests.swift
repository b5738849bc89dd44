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
}
