#if canImport(Glibc)
import Glibc
#endif

/// What the transcript files and the pcap export share: a directory to write into and whole writes.
public enum OutputFiles {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Creates `directory` if needed and checks that it can be written; `what` names it in messages.
    public static func prepare(_ directory: String, for what: String) throws {
        if mkdir(directory, 0o755) != 0, errno != EEXIST {
            throw Failure(description: "cannot create the \(what) \(directory): \(String(cString: strerror(errno)))")
        }
        guard access(directory, W_OK) == 0 else {
            throw Failure(description: "cannot write to the \(what) \(directory)")
        }
    }

    /// Writes all of `bytes` to `fd`; false when the disk refused some (errno says why).
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard fd >= 0 else { return false }
        guard let base = bytes.baseAddress else { return true }
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, base + offset, bytes.count - offset)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }
}
