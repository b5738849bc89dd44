@preconcurrency import Dispatch
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Standard output shared by concurrent sessions: whole batches of lines, never torn.
final class Terminal: Sendable {
    static let shared = Terminal()
    private let lock = NIOLock()

    /// Whether standard output is a terminal, for colour.
    var isTTY: Bool { isatty(STDOUT_FILENO) == 1 }

    func write(_ lines: [String]) {
        guard !lines.isEmpty else { return }
        let text = lines.joined(separator: "\n") + "\n"
        self.lock.withLock {
            var bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeMutableBytes { raw in
                    Glibc.write(STDOUT_FILENO, raw.baseAddress! + offset, raw.count - offset)
                }
                if n <= 0 { break }
                offset += n
            }
            bytes.removeAll()
        }
    }

    /// A progress line on standard error, written over itself; nil clears it.
    func progress(_ line: String?) {
        let text = "\r\u{1B}[K" + (line ?? "")
        self.lock.withLock {
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
        }
    }

    func error(_ line: String) {
        let text = line + "\n"
        self.lock.withLock {
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count - 1) }
        }
    }
}

/// When to colour output.
enum ColorChoice: String, CaseIterable, Sendable {
    case auto
    case always
    case never

    func enabled(for terminal: Terminal) -> Bool {
        switch self {
        case .auto: terminal.isTTY
        case .always: true
        case .never: false
        }
    }
}

/// Waits for SIGINT or SIGTERM (both are taken over from their default, which ends the process).
func waitForInterrupt() async {
    let (signals, continuation) = AsyncStream<Int32>.makeStream()
    let sources = [SIGINT, SIGTERM].map { number in
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
        source.setEventHandler { continuation.yield(number) }
        source.resume()
        return source
    }
    for await _ in signals { break }
    withExtendedLifetime(sources) {}
}
