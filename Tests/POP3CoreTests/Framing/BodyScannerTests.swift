import CPOP3Scan
import NIOCore
import Testing

@testable import POP3Core

@Suite("Body scanner and dot-stuffing")
struct BodyScannerTests {
    /// Scans `wire` in chunks of `size`; returns the scanner, the content it handed back and what was left.
    func scan(_ wire: String, size: Int) -> (BodyScanner, String, String) {
        var scanner = BodyScanner()
        var content = ByteBuffer()
        var rest = ByteBuffer()
        let bytes = Array(wire.utf8)
        for start in stride(from: 0, to: bytes.count, by: size) {
            var input = ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)])
            if !scanner.finished, var chunk = scanner.scan(&input) { content.writeBuffer(&chunk) }
            rest.writeBuffer(&input)
        }
        return (scanner, String(buffer: content), String(buffer: rest))
    }

    /// What a scan reports, to compare two scans of the same octets.
    struct Outcome: Equatable {
        var counts: [Int]
        var flags: [Bool]
        var content: [UInt8]
        var rest: [UInt8]
    }

    func outcome(_ bytes: [UInt8], size: Int) -> Outcome {
        var scanner = BodyScanner()
        var content: [UInt8] = []
        var rest: [UInt8] = []
        for start in stride(from: 0, to: bytes.count, by: size) {
            var input = ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)])
            if !scanner.finished, let chunk = scanner.scan(&input) { content += chunk.readableBytesView }
            rest += input.readableBytesView
        }
        return Outcome(
            counts: [
                scanner.octets, scanner.lines, scanner.stuffedLines, scanner.unstuffedLines, scanner.bareLineEndings,
                scanner.headerLines, scanner.bodyLines, scanner.eightBitHeaderLines,
            ],
            flags: [scanner.finished, scanner.inHeaders, scanner.bareTerminator],
            content: content,
            rest: rest
        )
    }

    /// Bodies of every kind of line: plain, long, empty, stuffed, unstuffed, bare LF, stray CR, 8-bit.
    static func randomBody(seed: UInt64) -> [UInt8] {
        var state = seed
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        var body: [UInt8] = Array("Subject: t\r\nX-8: \u{e9}\r\n\r\n".utf8)
        for _ in 0..<(200 + next(400)) {
            var line: [UInt8] = []
            switch next(12) {
            case 0: line = [0x2E, 0x2E]
            case 1: line = [0x2E, 0x41]
            case 2: line = []
            default: break
            }
            for _ in 0..<(next(4) == 0 ? next(300) : next(90)) {
                line.append(next(40) == 0 ? 0x0D : UInt8(0x21 + next(90)))
            }
            body += line
            body += next(15) == 0 ? [0x0A] : [0x0D, 0x0A]
        }
        return body + Array(".\r\n+OK after\r\n".utf8)
    }

    @Test("the block-at-a-time path counts as the octet-at-a-time path does", arguments: 0..<40)
    func blocksMatchOctets(_ seed: Int) {
        let body = Self.randomBody(seed: UInt64(seed))
        let octetByOctet = self.outcome(body, size: 1)
        #expect(octetByOctet.flags[0])
        for size in [17, 100, 4096, body.count] {
            let blocks = self.outcome(body, size: size)
            #expect(blocks.counts == octetByOctet.counts, "chunks of \(size)")
            #expect(blocks.flags == octetByOctet.flags, "chunks of \(size)")
            #expect(blocks.content == octetByOctet.content, "chunks of \(size)")
            #expect(blocks.rest == octetByOctet.rest, "chunks of \(size)")
        }
    }

    @Test("the vector paths pass only plain lines, count each, and stop at a block boundary", arguments: [1, 2])
    func vectorPath(_ path: Int32) {
        let width = path == 2 ? 32 : 16
        var passedSome = false
        for seed in 0..<40 {
            let body = Self.randomBody(seed: UInt64(seed))
            for start in [1, 7, 100] {
                var lines = 0
                let end = body.withUnsafeBufferPointer {
                    pop3_plain_lines_using(path, $0.baseAddress!, start, $0.count, &lines)
                }
                if end == start { continue }  // the path may be missing on this CPU, or the first block is odd
                passedSome = true
                #expect((end - start) % width == 0)
                #expect(end < body.count)
                let passed = start..<end
                #expect(lines == passed.filter { body[$0] == 0x0A }.count)
                for i in passed where body[i] == 0x0A {
                    #expect(body[i - 1] == 0x0D && body[i + 1] != 0x2E, "seed \(seed): octet \(i)")
                }
                // It stopped because the next block has an odd line, or too little follows.
                let next = end..<min(end + width, body.count)
                let odd = next.contains { body[$0] == 0x0A && (body[$0 - 1] != 0x0D || body[$0 + 1] == 0x2E) }
                #expect(odd || end + width >= body.count, "seed \(seed): stopped early at \(end)")
            }
        }
        #if arch(x86_64)
        #expect(passedSome || path == 2)  // SSE2 is on every x86-64 CPU; AVX2 may be missing
        #endif
    }

    @Test("a plain body read in large chunks: every line and octet counted")
    func plainBody() {
        let line = Array((String(repeating: "y", count: 76) + "\r\n").utf8)
        var body = Array("Subject: big\r\n\r\n".utf8)
        for _ in 0..<5000 { body += line }
        body += Array(".\r\n".utf8)
        let outcome = self.outcome(body, size: 65536)
        #expect(outcome.counts == [body.count - 3, 5002, 0, 0, 0, 1, 5000, 0])
        #expect(outcome.content == Array(body.dropLast(3)))
    }

    static let wire = "Subject: hi\r\n\r\n..dot line\r\nplain\r\n.\r\n+OK next\r\n"

    @Test("the terminator is found in any chunking and the content is the same", arguments: [1, 2, 3, 4, 7, 100])
    func chunking(_ size: Int) {
        let (scanner, content, rest) = self.scan(Self.wire, size: size)
        #expect(scanner.finished)
        #expect(content == "Subject: hi\r\n\r\n..dot line\r\nplain\r\n")
        #expect(rest == "+OK next\r\n")
        #expect(scanner.lines == 4)
        #expect(scanner.stuffedLines == 1)
        #expect(scanner.unstuffedLines == 0)
        #expect(scanner.headerLines == 1)
        #expect(scanner.bodyLines == 2)
        #expect(scanner.messageOctets == content.utf8.count - 1)
    }

    @Test("an empty body is just the terminator")
    func empty() {
        let (scanner, content, rest) = self.scan(".\r\n", size: 1)
        #expect(scanner.finished && content.isEmpty && rest.isEmpty && scanner.lines == 0)
    }

    @Test("a line with a single leading dot is counted as not stuffed (R7)", arguments: [1, 50])
    func unstuffed(_ size: Int) {
        let (scanner, content, _) = self.scan("a\r\n.x\r\n.\r\n", size: size)
        #expect(scanner.unstuffedLines == 1)
        #expect(content == "a\r\n.x\r\n")
    }

    @Test("bare LF lines and a bare LF terminator are counted (R1)")
    func bareLF() {
        let (scanner, content, _) = self.scan("a\nb\r\n.\n", size: 1)
        #expect(scanner.finished)
        #expect(scanner.bareLineEndings == 1)
        #expect(scanner.bareTerminator)
        #expect(content == "a\nb\r\n")
    }

    @Test("8-bit octets in headers are noticed, in the body they are not (R47)")
    func eightBit() {
        let (header, _, _) = self.scan("Subject: caf\u{E9}\r\n\r\nbody\r\n.\r\n", size: 3)
        #expect(header.eightBitHeaderLines == 1)
        let (body, _, _) = self.scan("Subject: x\r\n\r\ncaf\u{E9}\r\n.\r\n", size: 3)
        #expect(body.eightBitHeaderLines == 0)
    }

    @Test("the encoder stuffs leading dots, normalises line endings and terminates; the scanner reads it back")
    func encode() {
        var out = ByteBuffer()
        DotStuffing.writeBody(Array("From: a\n\n.hidden\n..two\nend".utf8), into: &out)
        #expect(String(buffer: out) == "From: a\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n")
        let (scanner, _, _) = self.scan(String(buffer: out), size: 5)
        #expect(scanner.stuffedLines == 2 && scanner.unstuffedLines == 0)
        #expect(scanner.messageOctets == DotStuffing.octets(of: Array("From: a\n\n.hidden\n..two\nend".utf8)))
    }

    @Test("TOP's body-line limit keeps the headers and the first n body lines")
    func top() {
        var out = ByteBuffer()
        DotStuffing.writeBody(Array("A: 1\r\n\r\nl1\r\nl2\r\nl3\r\n".utf8), into: &out, maxBodyLines: 2)
        #expect(String(buffer: out) == "A: 1\r\n\r\nl1\r\nl2\r\n.\r\n")
    }
}
