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
