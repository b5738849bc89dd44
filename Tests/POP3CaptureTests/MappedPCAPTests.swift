import Foundation
import NIOCore
import POP3Capture
import PopgateTestSupport
import Testing

/// Classic pcap files are read from a memory mapping; libpcap reads pcapng files and takes over at the first
/// record the mapping does not take whole. Either way the packets, their times and the errors are libpcap's.
@Suite("Capture files read in place", .timeLimit(.minutes(2)))
struct MappedPCAPTests {
    static let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/captures").path
    static let own = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Captures").path

    struct Packet: Equatable {
        var time: Double
        var bytes: [UInt8]
        var wireLength: Int
    }

    /// Every packet of `path`, and what ended the reading (nil: the end of the file; else the error's text).
    static func packets(_ path: String, mapping: Bool, filter: String? = nil) throws -> ([Packet], String?, Bool) {
        let source = try PCAPSource(file: path, mapping: mapping)
        let mapped = source.isMapped
        if let filter { try source.setFilter(filter) }
        var all: [Packet] = []
        while true {
            do {
                switch try source.next() {
                case .packet(let packet):
                    all.append(Packet(time: packet.time, bytes: packet.bytes, wireLength: packet.wireLength))
                case .nothing: continue
                case .end: return (all, nil, mapped)
                }
            } catch {
                return (all, "\(error)", mapped)
            }
        }
    }

    static func files(in directory: String) -> [String] {
        let names = (try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted().map { directory + "/" + $0 }
    }

    static func temporary(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "popgate-mapped-\(UUID().uuidString.prefix(8)).pcap"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("every capture reads the same from the mapping as through libpcap; classic files are mapped, pcapng not")
    func sameAsLibpcap() throws {
        let files = Self.files(in: Self.shared) + Self.files(in: Self.own)
        #expect(files.count >= 8)
        var mappedFiles = 0
        for file in files {
            let (fast, fastEnd, mapped) = try Self.packets(file, mapping: true)
            let (slow, slowEnd, _) = try Self.packets(file, mapping: false)
            #expect(fast == slow, "\(file)")
            #expect(fastEnd == slowEnd, "\(file)")
            #expect(!fast.isEmpty, "\(file)")
            let magic = try FileHandle(forReadingFrom: URL(fileURLWithPath: file)).read(upToCount: 4) ?? Data()
            let classic = magic != Data([0x0A, 0x0D, 0x0D, 0x0A])
            #expect(mapped == classic, "\(file)")
            if mapped { mappedFiles += 1 }
        }
        #expect(mappedFiles >= 5)
    }

    /// The synthetic session's file rewritten as a big-endian writer (and optionally a nanosecond one) writes it.
    static func rewritten(bigEndian: Bool, nanoseconds: Bool) -> [UInt8] {
        let little = SyntheticCapture().bytes
        func word(_ at: Int) -> UInt32 {
            UInt32(little[at]) | UInt32(little[at + 1]) << 8 | UInt32(little[at + 2]) << 16 | UInt32(little[at + 3])
                << 24
        }
        var out: [UInt8] = []
        func put32(_ v: UInt32) { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian) { out += $0 } }
        func put16(_ v: UInt16) { withUnsafeBytes(of: bigEndian ? v.bigEndian : v.littleEndian) { out += $0 } }
        put32(nanoseconds ? 0xA1B2_3C4D : 0xA1B2_C3D4)
        put16(2)
        put16(4)
        put32(0)
        put32(0)
        put32(word(16))
        put32(word(20))
        var at = 24
        while at < little.count {
            let captured = Int(word(at + 8))
            put32(word(at))
            // A nanosecond file gets 789 more nanoseconds, which libpcap's microseconds drop.
            put32(nanoseconds ? word(at + 4) * 1000 + 789 : word(at + 4))
            put32(word(at + 8))
            put32(word(at + 12))
            out += little[(at + 16)..<(at + 16 + captured)]
            at += 16 + captured
        }
        return out
    }

    @Test(
        "big-endian and nanosecond files: the same packets and times as libpcap gives",
        arguments: [(true, false), (false, true), (true, true)]
    )
    func byteOrderAndPrecision(bigEndian: Bool, nanoseconds: Bool) throws {
        let path = try Self.temporary(Self.rewritten(bigEndian: bigEndian, nanoseconds: nanoseconds))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (fast, end, mapped) = try Self.packets(path, mapping: true)
        let (slow, _, _) = try Self.packets(path, mapping: false)
        #expect(mapped)
        #expect(end == nil)
        #expect(fast.count == SyntheticCapture().frames.count)
        #expect(fast == slow)
        #expect(fast.map(\.bytes) == SyntheticCapture().frames)
    }

    @Test("a record cut short: the packets before it, then libpcap's own error")
    func truncatedRecord() throws {
        let whole = SyntheticCapture().bytes
        let path = try Self.temporary(Array(whole.dropLast(7)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (fast, fastEnd, mapped) = try Self.packets(path, mapping: true)
        let (slow, slowEnd, _) = try Self.packets(path, mapping: false)
        #expect(mapped)
        #expect(fast.count == SyntheticCapture().frames.count - 1)
        #expect(fast == slow)
        #expect(fastEnd != nil && fastEnd == slowEnd)
        #expect(fastEnd?.contains("truncated") == true, "\(fastEnd ?? "")")
    }

    @Test("a header cut short after whole records, and a record longer than the snapshot length: as libpcap reads them")
    func handedBack() throws {
        var whole = SyntheticCapture().bytes
        let headerCut = try Self.temporary(whole + [1, 2, 3, 4, 5])
        defer { try? FileManager.default.removeItem(atPath: headerCut) }
        let (fast, fastEnd, _) = try Self.packets(headerCut, mapping: true)
        let (slow, slowEnd, _) = try Self.packets(headerCut, mapping: false)
        #expect(fast == slow && fastEnd == slowEnd)
        #expect(fast.count == SyntheticCapture().frames.count)
        #expect(fastEnd?.contains("truncated") == true, "\(fastEnd ?? "")")

        // A snapshot length of 60: the longer records are libpcap's to read (it cuts them to 60).
        whole[16] = 60
        whole[17] = 0
        let short = try Self.temporary(whole)
        defer { try? FileManager.default.removeItem(atPath: short) }
        let (cutFast, cutFastEnd, _) = try Self.packets(short, mapping: true)
        let (cutSlow, cutSlowEnd, _) = try Self.packets(short, mapping: false)
        #expect(cutFast == cutSlow && cutFastEnd == cutSlowEnd)
        #expect(cutFast.count == SyntheticCapture().frames.count)
    }

    @Test("a BPF filter keeps the same packets from the mapping")
    func filter() throws {
        let path = try Self.temporary(SyntheticCapture().bytes)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (fast, _, mapped) = try Self.packets(path, mapping: true, filter: "src port 110")
        let (slow, _, _) = try Self.packets(path, mapping: false, filter: "src port 110")
        #expect(mapped)
        #expect(fast == slow)
        #expect(!fast.isEmpty && fast.count < SyntheticCapture().frames.count)
    }

    @Test("payloads are right whether the one before is still held or not (its buffer is reused only when free)")
    func payloadReuse() throws {
        let file = Self.shared + "/zeek/pop3.pcap"
        let fast = try PCAPSource(file: file)
        let slow = try PCAPSource(file: file, mapping: false)
        var held: [ByteBuffer] = []
        var index = 0
        var compared = 0
        while true {
            let a = try fast.nextSegment()
            let b = try slow.nextSegment()
            guard case .packet(let x, _) = a, case .packet(let y, _) = b else {
                if case .end = a, case .end = b { break }
                Issue.record("the two readers ended apart")
                return
            }
            #expect(x?.payload == y?.payload)
            // Every third payload is kept: the next is then written to a new buffer, and the kept one must not
            // change.
            if let payload = x?.payload, index % 3 == 0 { held.append(payload) }
            index += 1
            compared += 1
        }
        #expect(compared > 50)
        let check = try PCAPSource(file: file, mapping: false)
        var expected: [ByteBuffer] = []
        index = 0
        while case .packet(let segment, _) = try check.nextSegment() {
            if let payload = segment?.payload, index % 3 == 0 { expected.append(payload) }
            index += 1
        }
        #expect(held == expected)
    }

    /// A capture of at least `octets`: records of about 60 KB.
    static func large(_ octets: Int) -> [UInt8] {
        var capture = SyntheticCapture()
        capture.exchange = (0..<40).map { _ in (false, "+OK " + String(repeating: "z", count: 60_000) + "\r\n") }
        let one = capture.bytes
        var big = one
        let records = Array(one[24...])
        while big.count < octets { big += records }
        return big
    }

    @Test("a file still being written: what was added after it was opened is read too")
    func growing() throws {
        let whole = SyntheticCapture().bytes
        let frames = SyntheticCapture().frames
        // The header and the first three records now, the rest after the reader has opened the file.
        var cut = 24
        for frame in frames.prefix(3) { cut += 16 + frame.count }
        let path = try Self.temporary(Array(whole[..<cut]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let source = try PCAPSource(file: path)
        #expect(source.isMapped)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(whole[cut...]))
        try handle.close()
        var read: [[UInt8]] = []
        while case .packet(let packet) = try source.next() { read.append(packet.bytes) }
        #expect(read == frames)
    }

    @Test("a file cut shorter while it is read: libpcap takes over and reports the cut; nothing faults")
    func shrinking() throws {
        let big = Self.large(24 << 20)
        let path = try Self.temporary(big)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let source = try PCAPSource(file: path)
        #expect(source.isMapped)
        for _ in 0..<10 { _ = try source.next() }
        // Cut inside a record, 12 MiB in: reading the mapping past that would fault.
        #expect(truncate(path, off_t((12 << 20) + 7)) == 0)
        var packets = 10
        var failure: String?
        do {
            while case .packet = try source.next() { packets += 1 }
        } catch {
            failure = "\(error)"
        }
        #expect(failure?.contains("truncated") == true, "\(failure ?? "no error")")
        // The records whole before the cut: all of them read, none after.
        var whole = 0
        var at = 24
        while at + 16 <= (12 << 20) + 7 {
            let captured = Int(big[at + 8]) | Int(big[at + 9]) << 8 | Int(big[at + 10]) << 16
            guard at + 16 + captured <= (12 << 20) + 7 else { break }
            whole += 1
            at += 16 + captured
        }
        #expect(packets == whole, "\(packets) packets, \(whole) whole before the cut")
    }

    /// This process's resident octets that are file pages (a mapping's), from /proc.
    static func residentFile() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("RssFile:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test("a large file read from its mapping does not stay resident: what was read is let go of")
    func residentStaysSmall() throws {
        // 160 MB of one session's packets, repeated (the inspector's reading is not the point, the mapping is).
        let path = try Self.temporary(Self.large(160_000_000))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let before = Self.residentFile()
        let source = try PCAPSource(file: path)
        #expect(source.isMapped)
        var packets = 0
        var most = 0
        while case .packet = try source.next() {
            packets += 1
            if packets % 100 == 0 { most = max(most, Self.residentFile() - before) }
        }
        #expect(packets > 2_000)
        #expect(most < 80_000_000, "resident file pages grew by \(most) octets")
    }
}
