import CPOP3Scan

#if canImport(Glibc)
import Glibc
#endif

/// A classic pcap file (version 2.4) read in place from a memory mapping: each record is handed over where it
/// lies, so no octet is copied by read(2), by stdio or by libpcap on the way (those copies cost more than
/// everything popgate does with a packet). libpcap still opens the file and reads its header (link type,
/// filters, errors); at the first record this reader does not take whole, the caller hands the rest of the
/// file back to libpcap, which then says what is wrong in its own words. A file cut shorter while it is read is
/// noticed within 8 MiB; one cut and read within that window still faults, which libpcap's reads would not.
struct MappedPCAP {
    private let base: UnsafeRawPointer
    private let size: Int
    private let swapped: Bool
    private let nanoseconds: Bool
    private let snapshot: Int
    private let descriptor: Int32
    /// Where the file's size was last looked at.
    private var checked = 24
    /// Where the next record's header is.
    private(set) var offset = 24
    /// Pages behind this have been read and are let go of, so resident memory stays small on a large file.
    private var released = 0

    /// Maps `descriptor`'s file when it is a classic pcap file of version 2.4; nil otherwise (pcapng, a pipe,
    /// an older version), and libpcap reads it all.
    init?(descriptor: Int32) {
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_size >= 24 else {
            return nil
        }
        let size = Int(status.st_size)
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), mapping != MAP_FAILED else {
            return nil
        }
        madvise(mapping, size, MADV_SEQUENTIAL)
        let base = UnsafeRawPointer(mapping)
        let magic = base.loadUnaligned(as: UInt32.self)
        switch magic {
        case 0xA1B2_C3D4: (self.swapped, self.nanoseconds) = (false, false)
        case 0xD4C3_B2A1: (self.swapped, self.nanoseconds) = (true, false)
        case 0xA1B2_3C4D: (self.swapped, self.nanoseconds) = (false, true)
        case 0x4D3C_B2A1: (self.swapped, self.nanoseconds) = (true, true)
        default:
            munmap(mapping, size)
            return nil
        }
        self.base = base
        self.size = size
        self.descriptor = descriptor
        let major = base.loadUnaligned(fromByteOffset: 4, as: UInt16.self)
        let minor = base.loadUnaligned(fromByteOffset: 6, as: UInt16.self)
        let snapshot = base.loadUnaligned(fromByteOffset: 16, as: UInt32.self)
        guard (self.swapped ? major.byteSwapped : major) == 2, (self.swapped ? minor.byteSwapped : minor) == 4 else {
            munmap(mapping, size)
            return nil
        }
        // As libpcap takes it: 0 or more than its largest snapshot length (262,144 for the link types popgate
        // reads) means that largest. A longer record is libpcap's to judge.
        let stated = Int(self.swapped ? snapshot.byteSwapped : snapshot)
        self.snapshot = stated <= 0 || stated > 262_144 ? 262_144 : stated
    }

    func unmap() {
        munmap(UnsafeMutableRawPointer(mutating: self.base), self.size)
    }

    private func word(_ at: Int) -> UInt32 {
        let value = self.base.loadUnaligned(fromByteOffset: at, as: UInt32.self)
        return self.swapped ? value.byteSwapped : value
    }

    enum Record {
        /// A whole record: its time, its captured octets (valid until the mapping is let go of) and its length
        /// on the wire.
        case packet(time: Double, bytes: UnsafeBufferPointer<UInt8>, wireLength: Int)
        /// The end of the mapping, or a record this reader does not take (cut short, or longer than the snapshot
        /// length): libpcap is to read the file from `offset` on.
        case handBack
    }

    mutating func next() -> Record {
        let at = self.offset
        // A mapped page past the end of a file cut shorter meanwhile would stop the process (SIGBUS): every 8 MiB
        // the size is looked at again, and a shrunk file is libpcap's to read on (it reports the cut).
        if at - self.checked >= 8 << 20 {
            self.checked = at
            var status = stat()
            if fstat(self.descriptor, &status) != 0 || Int(status.st_size) < self.size { return .handBack }
        }
        // The end of what was mapped: libpcap reads on from here, so a file still being written (tcpdump -w)
        // gives what was added since it was opened, and a clean end is its own.
        if at == self.size { return .handBack }
        guard self.size - at >= 16 else { return .handBack }
        let captured = Int(self.word(at + 8))
        guard captured <= self.snapshot, self.size - at - 16 >= captured else { return .handBack }
        let seconds = Double(self.word(at))
        let fraction = Double(self.word(at + 4))
        // Microseconds, as libpcap gives nanosecond files by default (so times print as they always have).
        let time = seconds + (self.nanoseconds ? (fraction / 1000).rounded(.down) : fraction) / 1e6
        let start = self.base.advanced(by: at + 16).assumingMemoryBound(to: UInt8.self)
        self.offset = at + 16 + captured
        // What follows this record, a few records ahead, while this one is read.
        let ahead = self.offset + 4096
        if ahead + captured + 16 <= self.size { pop3_prefetch(self.base.advanced(by: ahead), captured + 16) }
        if self.offset - self.released >= 32 << 20 { self.release() }
        return .packet(
            time: time,
            bytes: UnsafeBufferPointer(start: start, count: captured),
            wireLength: Int(self.word(at + 12))
        )
    }

    /// Lets go of the pages before the previous record (they stay in the page cache; only this process's
    /// resident count drops).
    private mutating func release() {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let upTo = (self.offset - 256 * 1024) / page * page
        guard upTo > self.released else { return }
        madvise(UnsafeMutableRawPointer(mutating: self.base), upTo, MADV_DONTNEED)
        self.released = upTo
    }
}
