import CLibpcap
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A packet as libpcap hands it over: capture time, link type and the captured bytes.
public struct CapturedPacket: Sendable {
    /// Seconds since 1970.
    public var time: Double
    public var bytes: [UInt8]
    /// Octets on the wire; more than `bytes.count` when the snapshot length cut the packet.
    public var wireLength: Int
}

/// A capture file (pcap or pcapng, whatever its name says) or a live interface, read through libpcap.
/// One thread reads it at a time; handing it to that thread is what Sendable allows.
public final class PCAPSource: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private let handle: OpaquePointer
    private var dumper: OpaquePointer?
    public let name: String
    /// The data link type (`DLT_*`).
    public let linkType: Int32

    /// Opens a capture file. `mapping`: a classic pcap file is read from a memory mapping (false: libpcap reads it
    /// all, as it reads pcapng files and pipes).
    public init(file path: String, mapping: Bool = true) throws {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let file = fopen(path, "rb") else {
            throw Failure(description: "\(path): " + String(cString: strerror(errno)))
        }
        // A 1 MiB stdio buffer: libpcap reads a file a record at a time, and the default buffer makes that
        // a read(2) every few kilobytes.
        setvbuf(file, nil, _IOFBF, 1 << 20)
        guard let handle = pcap_fopen_offline(file, &errorBuffer) else {
            fclose(file)
            throw Failure(description: "\(path): " + Self.text(errorBuffer))
        }
        self.handle = handle
        self.name = path
        self.linkType = pcap_datalink(handle)
        if mapping { self.mapped = MappedPCAP(descriptor: fileno(file)) }
    }

    /// Whether the records are being read from a memory mapping (a classic pcap file, until a record libpcap is
    /// to judge).
    public var isMapped: Bool { self.mapped != nil }

    /// Opens a live interface in immediate mode: each packet is handed over as it arrives.
    public init(interface: String, snapshotLength: Int32 = 262_144) throws {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE) + 1)
        guard let handle = pcap_create(interface, &errorBuffer) else {
            throw Failure(description: "\(interface): " + Self.text(errorBuffer))
        }
        pcap_set_snaplen(handle, snapshotLength)
        pcap_set_immediate_mode(handle, 1)
        pcap_set_timeout(handle, 100)
        let status = pcap_activate(handle)
        if status < 0 {
            let message = String(cString: pcap_geterr(handle))
            pcap_close(handle)
            throw Failure(description: "\(interface): " + message)
        }
        self.handle = handle
        self.name = interface
        self.linkType = pcap_datalink(handle)
        self.live = true
    }

    private var live = false
    /// The last payload's buffer, reused for the next when nothing else holds it.
    private var scratch: ByteBuffer?
    /// A classic pcap file is read from a mapping while its records are whole; libpcap reads the rest.
    private var mapped: MappedPCAP?
    /// The `--filter` program, for the records read from the mapping.
    private var program: bpf_program?

    /// A NUL-terminated C buffer as text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        if let dumper = self.dumper { pcap_dump_close(dumper) }
        self.mapped?.unmap()
        if var program = self.program { pcap_freecode(&program) }
        pcap_close(self.handle)
    }

    /// Also saves every packet read, as it is, to a pcap file.
    public func write(to path: String) throws {
        guard let dumper = pcap_dump_open(self.handle, path) else {
            throw Failure(description: "\(path): " + String(cString: pcap_geterr(self.handle)))
        }
        self.dumper = dumper
    }

    /// Writes what the saved file has so far to disk.
    public func flushWritten() {
        if let dumper = self.dumper { pcap_dump_flush(dumper) }
    }

    /// Keeps only the packets that match a BPF expression, such as `tcp port 110`.
    public func setFilter(_ expression: String) throws {
        var program = bpf_program()
        guard pcap_compile(self.handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw Failure(description: "filter \"\(expression)\": " + String(cString: pcap_geterr(self.handle)))
        }
        guard pcap_setfilter(self.handle, &program) == 0 else {
            pcap_freecode(&program)
            throw Failure(description: "filter \"\(expression)\": " + String(cString: pcap_geterr(self.handle)))
        }
        if var old = self.program { pcap_freecode(&old) }
        self.program = program
    }

    public enum Next {
        case packet(CapturedPacket)
        /// A live read timed out with nothing new.
        case nothing
        case end
    }

    /// The next packet; throws when the file is damaged (what came before stays valid).
    public func next() throws -> Next {
        switch try self.read({ time, bytes, wire in CapturedPacket(time: time, bytes: Array(bytes), wireLength: wire) })
        {
        case .value(let packet): .packet(packet)
        case .nothing: .nothing
        case .end: .end
        }
    }

    public enum NextSegment {
        /// A packet; its TCP segment when it carries one.
        case packet(TCPSegment?, time: Double)
        case nothing
        case end
    }

    /// What was not decoded, by what it was: packets and their octets on the wire.
    public private(set) var undecoded: [String: (packets: Int, octets: Int)] = [:]

    /// The undecoded packets in one line, most first; nil when every packet was decoded.
    public var undecodedReport: String? {
        guard !self.undecoded.isEmpty else { return nil }
        let packets = self.undecoded.values.reduce(0) { $0 + $1.packets }
        let octets = self.undecoded.values.reduce(0) { $0 + $1.octets }
        let kinds = self.undecoded.sorted { ($1.value.packets, $0.key) < ($0.value.packets, $1.key) }
            .map { "\($0.key) \($0.value.packets) (\($0.value.octets) octets)" }
        return "\(packets) packet\(packets == 1 ? "" : "s") (\(octets) octets) not decoded as TCP: "
            + kinds.joined(separator: ", ")
    }

    /// The next packet decoded straight from libpcap's buffer, without copying the whole packet.
    public func nextSegment() throws -> NextSegment {
        let linkType = self.linkType
        var scratch = self.scratch
        self.scratch = nil
        let decoded = try self.read { time, bytes, wire in
            (PacketDecoder.decode(bytes, linkType: linkType, reusing: &scratch), time, wire)
        }
        switch decoded {
        case .value(let (.tcp(segment), time, _)):
            // Once the caller is done with this payload, its storage is free for the next one.
            self.scratch = segment.payload
            return .packet(segment, time: time)
        case .value(let (.skipped(what), time, wire)):
            self.undecoded[what, default: (0, 0)].packets += 1
            self.undecoded[what, default: (0, 0)].octets += wire
            return .packet(nil, time: time)
        case .nothing: return .nothing
        case .end: return .end
        }
    }

    private enum Read<T> {
        case value(T)
        case nothing
        case end
    }

    /// Reads one packet and hands libpcap's buffer to `make` while it is valid; saves it with `--write`.
    private func read<T>(_ make: (Double, UnsafeBufferPointer<UInt8>, Int) -> T) throws -> Read<T> {
        if self.live {
            // Wait at most 100 ms, so a caller can check whether to stop.
            let fd = pcap_get_selectable_fd(self.handle)
            if fd >= 0 {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, 100) == 0 { return .nothing }
            }
        }
        while var mapped = self.mapped {
            let record = mapped.next()
            self.mapped = mapped
            switch record {
            case .packet(let time, let bytes, let wire):
                guard self.program != nil || self.dumper != nil else { return .value(make(time, bytes, wire)) }
                var header = pcap_pkthdr()
                header.caplen = UInt32(bytes.count)
                header.len = UInt32(wire)
                header.ts.tv_sec = Int(time.rounded(.down))
                header.ts.tv_usec = Int(((time - time.rounded(.down)) * 1e6).rounded())
                if var program = self.program, pcap_offline_filter(&program, &header, bytes.baseAddress) == 0 {
                    continue
                }
                if let dumper = self.dumper {
                    let user = UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self)
                    pcap_dump(user, &header, bytes.baseAddress)
                }
                return .value(make(time, bytes, wire))
            case .handBack:
                // libpcap reads on from this record and reports what is wrong with it.
                fseek(pcap_file(self.handle), mapped.offset, SEEK_SET)
                mapped.unmap()
                self.mapped = nil
            }
        }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        switch pcap_next_ex(self.handle, &header, &data) {
        case 1:
            guard let header, let data else { return .nothing }
            if let dumper = self.dumper {
                pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: UInt8.self), header, data)
            }
            let time = Double(header.pointee.ts.tv_sec) + Double(header.pointee.ts.tv_usec) / 1e6
            let bytes = UnsafeBufferPointer(start: data, count: Int(header.pointee.caplen))
            return .value(make(time, bytes, Int(header.pointee.len)))
        case 0:
            return .nothing
        case -2:
            return .end
        default:
            throw Failure(description: "\(self.name): " + String(cString: pcap_geterr(self.handle)))
        }
    }

    /// Asks a live capture's loop to stop.
    public func breakLoop() { pcap_breakloop(self.handle) }
}
