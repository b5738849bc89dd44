import NIOCore
import Testing

@testable import POP3Core

@Suite("Line framer")
struct LineFramerTests {
    func frames(_ text: String, limit: Int = 255, chunk: Int? = nil) -> [LineFramer.Frame] {
        var framer = LineFramer(limit: limit)
        var frames: [LineFramer.Frame] = []
        let bytes = Array(text.utf8)
        let size = chunk ?? max(bytes.count, 1)
        for start in stride(from: 0, to: bytes.count, by: size) {
            var input = ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)])
            while let frame = framer.next(from: &input) { frames.append(frame) }
        }
        return frames
    }

    @Test("CRLF lines come out without their line ending")
    func crlf() {
        #expect(
            self.frames("USER a\r\nPASS b\r\n") == [
                .line(ByteBuffer(string: "USER a"), .crlf), .line(ByteBuffer(string: "PASS b"), .crlf),
            ]
        )
    }

    @Test("a bare LF ends a line and is marked as such")
    func bareLF() {
        #expect(
            self.frames("STAT\nNOOP\r\n") == [
                .line(ByteBuffer(string: "STAT"), .lf), .line(ByteBuffer(string: "NOOP"), .crlf),
            ]
        )
    }

    @Test("a line split across chunks, even between CR and LF, comes out whole", arguments: [1, 2, 3, 5])
    func chunked(_ size: Int) {
        #expect(
            self.frames("RETR 12\r\nQUIT\r\n", chunk: size) == [
                .line(ByteBuffer(string: "RETR 12"), .crlf), .line(ByteBuffer(string: "QUIT"), .crlf),
            ]
        )
    }

    @Test("a line of exactly the limit passes; one octet more is too long", arguments: [1, 7])
    func limit(_ chunk: Int) {
        let exact = String(repeating: "a", count: 253) + "\r\n"
        #expect(
            self.frames(exact, chunk: chunk) == [.line(ByteBuffer(string: String(repeating: "a", count: 253)), .crlf)]
        )
        let over = String(repeating: "a", count: 254) + "\r\n"
        guard case .tooLong(let prefix, let octets)? = self.frames(over, chunk: chunk).first else {
            Issue.record("expected tooLong")
            return
        }
        #expect(octets == 256)
        #expect(prefix.readableBytes <= 255)
    }

    @Test("an endless line keeps memory bounded and framing resumes after its LF")
    func endless() {
        var framer = LineFramer(limit: 255)
        var chunk = ByteBuffer(repeating: 0x41, count: 64 * 1024)
        for _ in 0..<64 {
            var input = chunk
            #expect(framer.next(from: &input) == nil)
            #expect(framer.bufferedOctets <= 255)
        }
        chunk = ByteBuffer(string: "x\r\nNOOP\r\n")
        guard case .tooLong(_, let octets)? = framer.next(from: &chunk) else {
            Issue.record("expected tooLong")
            return
        }
        #expect(octets == 64 * 64 * 1024 + 3)
        #expect(framer.next(from: &chunk) == .line(ByteBuffer(string: "NOOP"), .crlf))
    }
}
