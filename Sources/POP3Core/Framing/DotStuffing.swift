import struct NIOCore.ByteBuffer

/// Writes multi-line reply bodies (RFC 1939 §3).
public enum DotStuffing {
    /// Writes `message` as a multi-line body: every line ends with CRLF (bare LF is converted), every line that
    /// begins with `.` gets another `.`, and the terminating `.` CRLF follows. `maxBodyLines` limits the lines
    /// after the header block, for TOP (RFC 1939 §7).
    @discardableResult
    public static func writeBody(
        _ message: some Collection<UInt8>,
        into out: inout ByteBuffer,
        maxBodyLines: Int? = nil
    )
        -> Int
    {
        let start = out.writerIndex
        var inHeaders = true
        var bodyLines = 0
        var lineStart = message.startIndex
        var index = message.startIndex
        func emitLine(_ line: some Collection<UInt8>) -> Bool {
            if !inHeaders {
                if let maxBodyLines, bodyLines >= maxBodyLines { return false }
                bodyLines += 1
            } else if line.isEmpty {
                inHeaders = false
            }
            if line.first == 0x2E { out.writeInteger(UInt8(0x2E)) }
            out.writeBytes(line)
            out.writeString("\r\n")
            return true
        }
        while index != message.endIndex {
            if message[index] == 0x0A {
                var end = index
                if end != lineStart, message[message.index(end, offsetBy: -1)] == 0x0D {
                    end = message.index(end, offsetBy: -1)
                }
                if !emitLine(message[lineStart..<end]) {
                    lineStart = message.endIndex
                    break
                }
                lineStart = message.index(after: index)
            }
            index = message.index(after: index)
        }
        if lineStart != message.endIndex { _ = emitLine(message[lineStart...]) }
        out.writeString(".\r\n")
        return out.writerIndex - start
    }

    /// The size of `message` as LIST and STAT report it: octets with CRLF line endings (RFC 1939 §5, §11).
    public static func octets(of message: some Collection<UInt8>) -> Int {
        var octets = 0
        var previous: UInt8 = 0
        var last: UInt8 = 0x0A
        for byte in message {
            if byte == 0x0A && previous != 0x0D { octets += 1 }
            octets += 1
            previous = byte
            last = byte
        }
        // A last line without a line ending is sent with one.
        if !message.isEmpty && last != 0x0A { octets += 2 }
        return octets
    }
}
