import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// The one writer of a process's output files (transcripts, pcap exports).
///
/// Sessions append to a file's buffer in memory and go on; a serial queue writes the buffers in batches,
/// opening each file only for the write, so an idle session costs no descriptor. Everything appended is on
/// disk within ``Limits/interval``, and soon after the file is closed. Memory is bounded: a file whose
/// unwritten octets would pass ``Limits/perFile``, or all of them ``Limits/total``, has fallen behind; it
/// gets its note (so the file says where and why it stops), the log hears of it, and it takes nothing more.
/// The relay never waits on the disk.
public final class OutputWriter: Sendable {
    public struct Limits: Sendable, Hashable {
        /// Unwritten octets one file may have.
        public var perFile: Int
        /// Unwritten octets all files together may have.
        public var total: Int
        /// Unwritten octets of one file that start its write before the interval is up.
        public var batch: Int
        /// Unwritten octets of all files that start writing them all before the interval is up.
        public var pressure: Int
        /// The longest an appended octet waits for the disk, in seconds.
        public var interval: Double
        /// How long a closed file waits for others to close, in seconds: at a thousand session ends a second
        /// their files share a few wake-ups of the writer, not one each.
        public var closeDelay: Double

        /// `total` octets in all; each file half of them, at least 1 MiB.
        public init(total: Int = 64 << 20, interval: Double = 1, closeDelay: Double = 0.02) {
            self.closeDelay = closeDelay
            self.total = max(total, 1 << 20)
            self.perFile = max(self.total / 2, 1 << 20)
            self.batch = min(1 << 20, self.perFile / 4)
            self.pressure = self.total / 4
            self.interval = interval
        }
    }

    /// A file of the writer's; any thread may use it.
    public struct File: Sendable {
        fileprivate let id: Int
        fileprivate let writer: OutputWriter

        /// Hands `bytes` to the writer. False once the file takes nothing more: it fell behind, or writing it
        /// failed; stop making output for it.
        @discardableResult
        public func append(_ bytes: ByteBuffer) -> Bool { self.writer.append(bytes, to: self.id) }

        @discardableResult
        public func append(_ bytes: [UInt8]) -> Bool { self.append(ByteBuffer(bytes: bytes)) }

        /// Nothing more comes: the file is written out and forgotten.
        public func close() { self.writer.close(self.id) }
    }

    private struct Pending {
        var path: String
        /// What to write when the file falls behind.
        var note: @Sendable (String) -> ByteBuffer
        var buffer = Chunks()
        /// Octets handed to the queue and not yet written.
        var writing = 0
        var created = false
        var closing = false
        var stopped = false
        /// Writing it failed: what comes is dropped.
        var failed = false
    }

    private struct State {
        var files: [Int: Pending] = [:]
        var nextID = 0
        /// Files with something to write, or closed.
        var dirty: Set<Int> = []
        /// Of those, the ones to write at once: closed, or with a batch to write. The rest wait for the
        /// interval, so that a session's end does not make every other session's file open for a few lines.
        var urgent: Set<Int> = []
        /// Unwritten octets, in buffers and on the queue.
        var unwritten = 0
        var drainScheduled = false
        var kicked = false
        var pressed = false
        var failures = 0
        var fellBehind = 0
        /// Times the queue woke to write (for the tests).
        var drains = 0
    }

    public let limits: Limits
    private let state = NIOLockedValueBox(State())
    /// Internal so that tests can hold the disk back.
    let queue = DispatchQueue(label: "popgate.output")
    private let logger: Logger?

    public init(limits: Limits = Limits(), logger: Logger? = nil) {
        self.limits = limits
        self.logger = logger
    }

    /// A new file at `path` (made, or emptied, on the first write). `note` gives what the file ends with if it
    /// falls behind, from the reason.
    public func open(_ path: String, note: @escaping @Sendable (String) -> ByteBuffer) -> File {
        let id = self.state.withLockedValue { state in
            state.nextID += 1
            state.files[state.nextID] = Pending(path: path, note: note)
            return state.nextID
        }
        return File(id: id, writer: self)
    }

    /// Files that could not be written (opened or written to), counted; the first is logged.
    public var failedFiles: Int { self.state.withLockedValue { $0.failures } }

    /// Files that fell behind and stopped.
    public var stoppedFiles: Int { self.state.withLockedValue { $0.fellBehind } }

    /// Unwritten octets now.
    public var unwrittenOctets: Int { self.state.withLockedValue { $0.unwritten } }

    /// Writes everything appended so far and waits until the disk has it.
    public func flush() {
        self.queue.async { self.drain(all: true) }
        self.queue.sync {}
    }

    private func append(_ bytes: ByteBuffer, to id: Int) -> Bool {
        enum Then {
            case nothing
            case schedule
            case kick
            case press
            case fellBehind(String, String)
        }
        let count = bytes.readableBytes
        let (taken, then): (Bool, Then) = self.state.withLockedValue { state in
            // Only numbers are read out; the file is changed in place, since a copy of it out and back would
            // copy its chunks on every append.
            guard
                let (held, buffered) = state.files[id].flatMap({ file in
                    file.stopped || file.closing ? nil : (file.buffer.octets + file.writing, file.buffer.octets)
                })
            else { return (false, .nothing) }
            guard count > 0 else { return (true, .nothing) }
            if held + count > self.limits.perFile || state.unwritten + count > self.limits.total {
                let reason =
                    held + count > self.limits.perFile
                    ? "the disk is \(held) octets behind on this file (the limit is \(self.limits.perFile))"
                    : "the disk is \(state.unwritten) octets behind on all files (the limit is \(self.limits.total))"
                let note = state.files[id]!.note(reason)
                state.files[id]!.stopped = true
                state.files[id]!.buffer.append(note)
                state.unwritten += note.readableBytes
                state.fellBehind += 1
                state.dirty.insert(id)
                state.urgent.insert(id)
                return (false, .fellBehind(state.files[id]!.path, reason))
            }
            state.files[id]!.buffer.append(bytes)
            state.unwritten += count
            state.dirty.insert(id)
            if state.unwritten >= self.limits.pressure, !state.pressed {
                state.pressed = true
                return (true, .press)
            }
            if buffered + count >= self.limits.batch, state.urgent.insert(id).inserted, !state.kicked {
                state.kicked = true
                return (true, .kick)
            }
            if !state.drainScheduled {
                state.drainScheduled = true
                return (true, .schedule)
            }
            return (true, .nothing)
        }
        switch then {
        case .nothing: break
        case .schedule: self.schedule()
        case .kick: self.queue.async { self.drain(all: false) }
        case .press: self.queue.async { self.drain(all: true) }
        case .fellBehind(let path, let reason):
            self.logger?.warning("output to \(path) stops here: \(reason); the session goes on")
            self.queue.async { self.drain(all: false) }
        }
        return taken
    }

    private func close(_ id: Int) {
        let kick = self.state.withLockedValue { state -> Bool in
            guard state.files[id] != nil else { return false }
            state.files[id]!.closing = true
            state.dirty.insert(id)
            state.urgent.insert(id)
            guard !state.kicked else { return false }
            state.kicked = true
            return true
        }
        if kick { self.queue.asyncAfter(deadline: .now() + self.limits.closeDelay) { self.drain(all: false) } }
    }

    /// Times the queue woke to write.
    var drains: Int { self.state.withLockedValue { $0.drains } }

    private func schedule() {
        self.queue.asyncAfter(deadline: .now() + self.limits.interval) { self.drain(all: true) }
    }

    /// On the queue: writes the urgent files' buffers, or with `all` every dirty file's.
    private func drain(all: Bool) {
        struct Work {
            var id: Int
            var path: String
            var bytes: Chunks
            var created: Bool
            var closing: Bool
            var failed: Bool
        }
        var scheduleAgain = false
        let work: [Work] = self.state.withLockedValue { state in
            state.kicked = false
            state.drains += 1
            if all {
                state.drainScheduled = false
                state.pressed = false
            }
            let ids = all ? state.dirty : state.urgent
            var work: [Work] = []
            work.reserveCapacity(ids.count)
            for id in ids {
                guard var file = state.files[id] else { continue }
                work.append(
                    Work(
                        id: id,
                        path: file.path,
                        bytes: file.buffer,
                        created: file.created || file.failed,
                        closing: file.closing,
                        failed: file.failed
                    )
                )
                file.writing += file.buffer.octets
                file.buffer = Chunks()
                file.created = true
                state.files[id] = file
            }
            if all {
                state.dirty.removeAll(keepingCapacity: true)
            } else {
                state.dirty.subtract(ids)
                // What waits for the interval has a drain coming.
                if !state.dirty.isEmpty, !state.drainScheduled {
                    state.drainScheduled = true
                    scheduleAgain = true
                }
            }
            state.urgent.removeAll(keepingCapacity: true)
            return work
        }
        if scheduleAgain { self.schedule() }
        var failed: [(id: Int, path: String, error: Int32)] = []
        for item in work where !item.failed {
            // A file closed with nothing in it is still made, once.
            guard item.bytes.octets > 0 || (!item.created && item.closing) else { continue }
            if let error = Self.write(item.bytes, to: item.path, creating: !item.created) {
                failed.append((item.id, item.path, error))
            }
        }
        let first: (String, Int32)? = self.state.withLockedValue { state in
            var first: (String, Int32)?
            for failure in failed where state.files[failure.id]?.failed == false {
                state.failures += 1
                if state.failures == 1 { first = (failure.path, failure.error) }
                // A file that cannot be written takes nothing more.
                state.files[failure.id]?.failed = true
                state.files[failure.id]?.stopped = true
            }
            for item in work {
                let written = item.bytes.octets
                state.unwritten -= written
                if item.closing {
                    state.files[item.id] = nil
                } else {
                    state.files[item.id]?.writing -= written
                }
            }
            return first
        }
        if let (path, error) = first {
            self.logger?.error(
                "cannot write \(path): \(String(cString: strerror(error))); files that cannot be written are counted from now on, not logged"
            )
        }
    }

    /// Opens `path` for this write only; the error, if any.
    private static func write(_ bytes: Chunks, to path: String, creating: Bool) -> Int32? {
        let flags = O_WRONLY | O_CLOEXEC | (creating ? O_CREAT | O_TRUNC : O_APPEND)
        let fd = Glibc.open(path, flags, 0o640)
        guard fd >= 0 else { return errno }
        defer { Glibc.close(fd) }
        for chunk in bytes.chunks {
            guard chunk.withUnsafeReadableBytes({ OutputFiles.writeAll(fd, $0) }) else { return errno }
        }
        return nil
    }
}

/// A file's unwritten octets in chunks of at most 64 KiB (or one append): small appends share one, and a long
/// backlog is never copied to grow a buffer. Copies, so a slice never keeps a larger buffer alive.
private struct Chunks {
    static let size = 64 << 10
    private(set) var chunks: [ByteBuffer] = []
    private(set) var octets = 0

    mutating func append(_ bytes: ByteBuffer) {
        self.octets += bytes.readableBytes
        // A chunk grows up to the size (a quiet session's few lines cost little), then the next one starts.
        if let last = self.chunks.indices.last, self.chunks[last].readableBytes + bytes.readableBytes <= Self.size {
            self.chunks[last].writeImmutableBuffer(bytes)
            return
        }
        var chunk = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
        chunk.writeImmutableBuffer(bytes)
        self.chunks.append(chunk)
    }
}
