import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP client on loopback, for what a NIO client would not do: shut down only its sending side (as
/// `printf … | nc` does), or reset the connection at once.
public final class RawSocket: @unchecked Sendable {
    public let fd: Int32

    /// `source`: the loopback address to connect from (all of 127.0.0.0/8 is this machine's), for allow-lists.
    public init(port: Int, from source: String? = nil) throws {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard self.fd >= 0 else { throw RawSocketError(what: "socket") }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard bound == 0 else {
                Glibc.close(self.fd)
                throw RawSocketError(what: "bind to \(source)")
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(self.fd)
            throw RawSocketError(what: "connect to \(port)")
        }
    }

    public func send(_ text: String) { self.sendBytes(Array(text.utf8)) }

    public func sendBytes(_ bytes: [UInt8]) {
        var bytes = bytes
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.send(self.fd, $0.baseAddress! + sent, $0.count - sent, 0) }
            if n <= 0 { return }
            sent += n
        }
    }

    /// Sends FIN: nothing more from this side, replies may still come.
    public func shutdownWrite() { shutdown(self.fd, Int32(SHUT_WR)) }

    /// Reads until the peer closes or `seconds` pass without data. The wait blocks a thread of its own, never
    /// one of the few that run the tests' tasks.
    public func readAll(seconds: Int = 10) async -> String {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: Self.readAll(fd, seconds: seconds)) }
        }
    }

    /// As `readAll`, with the moment the read ended, taken on the reading thread: a test that times a close
    /// measures the gateway, not how long a loaded machine took to resume the test's task.
    public func readAllTimed(seconds: Int = 10) async -> (text: String, ended: ContinuousClock.Instant) {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                let text = Self.readAll(fd, seconds: seconds)
                continuation.resume(returning: (text, ContinuousClock.now))
            }
        }
    }

    /// Reads until what came so far holds `marker`, the peer closes, or `seconds` pass without data.
    public func readUntil(_ marker: String, seconds: Int = 10) async -> String {
        let fd = self.fd
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: Self.readAll(fd, seconds: seconds, until: marker)) }
        }
    }

    private static func readAll(_ fd: Int32, seconds: Int, until marker: String? = nil) -> String {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buffer[0..<n]
            if let marker, String(decoding: out, as: UTF8.self).contains(marker) { break }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Closes with a reset (SO_LINGER 0), as an attacker's client does.
    public func reset() {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        self.close()
    }

    private let closing = NSLock()
    private var isClosed = false

    /// Closes once, however often it is called: a second close(2) would shut whatever got the number since.
    public func close() {
        self.closing.lock()
        defer { self.closing.unlock() }
        guard !self.isClosed else { return }
        self.isClosed = true
        Glibc.close(self.fd)
    }
}

public struct RawSocketError: Error {
    public var what: String
}
