// popgate inspect --summary against tshark's POP dissector on the same capture, in one run.
// It writes a capture of at least 200 MB (many sessions, large RETRs), then times both.
// Run: scripts/bench.sh, or swift run -c release popgate-inspect-bench [--megabytes N]

import ArgumentParser
import Foundation
import NIOCore
import POP3Core

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "popgate-inspect-bench",
        abstract: "popgate inspect --summary against tshark's POP dissector on one capture it writes.",
        discussion: """
            Examples:
              popgate-inspect-bench --megabytes 1000
              popgate-inspect-bench --before /tmp/old/popgate --keep
            """
    )
    @Option(help: "Size of the capture written, in MB (at least 200 gives steady figures).") var megabytes = 200
    @Flag(help: "Leave the capture in place (for profiling popgate inspect on it).") var keep = false
    @Option(help: ArgumentHelp("An earlier popgate build measured in the same run.", valueName: "path"))
    var before: String?

    func validate() throws {
        guard self.megabytes >= 1 else { throw ValidationError("--megabytes must be at least 1") }
    }
}
let options = Options.parseOrExit()
let megabytes = options.megabytes

/// A classic pcap file of Ethernet/IPv4/TCP packets, built in memory and written once.
struct CaptureWriter {
    var data = Data()
    var time: UInt32 = 1_700_000_000

    init() {
        var header = [UInt8]()
        header += [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0]  // magic, version 2.4
        header += [0, 0, 0, 0, 0, 0, 0, 0]  // zone, accuracy
        header += [0xFF, 0xFF, 0, 0, 1, 0, 0, 0]  // snaplen 65535, Ethernet
        self.data.append(contentsOf: header)
    }

    static func le32(_ v: UInt32) -> [UInt8] {
        [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)]
    }
    static func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }

    mutating func packet(from: (UInt8, Int), to: (UInt8, Int), seq: UInt32, flags: UInt8, payload: ArraySlice<UInt8>) {
        if self.leaving { return }
        var p: [UInt8] = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00]
        let total = 20 + 20 + payload.count
        p += [0x45, 0] + Self.be16(total) + [0, 0, 0x40, 0, 64, 6, 0, 0]
        p += [10, 0, 0, from.0] + [10, 0, 0, to.0]
        p +=
            Self.be16(from.1) + Self.be16(to.1) + Self.be32(seq) + Self.be32(0) + [0x50, flags] + Self.be16(65535) + [
                0, 0, 0, 0,
            ]
        p += payload
        self.data.append(
            contentsOf: Self.le32(self.time) + Self.le32(0) + Self.le32(UInt32(p.count)) + Self.le32(UInt32(p.count))
        )
        self.data.append(contentsOf: p)
    }

    /// Set while a mid-way session's first part is being left out of the capture.
    var leaving = false

    /// One POP3 session: login, LIST, a RETR of `body`, QUIT; server segments of up to 1460 octets. `midway`:
    /// the capture begins half-way through the RETR's body (no SYN, no login seen).
    mutating func session(_ index: Int, body: ByteBufferBytes, midway: Bool = false) {
        self.leaving = midway
        defer { self.leaving = false }
        let client = (UInt8(2 + index % 200), 40_000 + index % 20_000)
        let server = (UInt8(1), 110)
        var cseq: UInt32 = 1000
        var sseq: UInt32 = 5000
        self.packet(from: client, to: server, seq: cseq - 1, flags: 0x02, payload: [])
        self.packet(from: server, to: client, seq: sseq - 1, flags: 0x12, payload: [])
        func send(_ fromClient: Bool, _ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + 1460)
                if fromClient {
                    self.packet(from: client, to: server, seq: cseq, flags: 0x18, payload: bytes[offset..<end])
                    cseq &+= UInt32(end - offset)
                } else {
                    self.packet(from: server, to: client, seq: sseq, flags: 0x18, payload: bytes[offset..<end])
                    sseq &+= UInt32(end - offset)
                }
                offset = end
            }
        }
        send(false, Array("+OK POP3 ready\r\n".utf8))
        send(true, Array("USER bench\r\n".utf8))
        send(false, Array("+OK\r\n".utf8))
        send(true, Array("PASS secret\r\n".utf8))
        send(false, Array("+OK logged in\r\n".utf8))
        send(true, Array("LIST\r\n".utf8))
        send(false, Array("+OK 1 messages\r\n1 \(body.size)\r\n.\r\n".utf8))
        send(true, Array("RETR 1\r\n".utf8))
        let retr = Array("+OK \(body.size) octets\r\n".utf8) + body.stuffed
        if midway {
            // The first half is not captured; the second half is.
            let half = retr.count / 2
            send(false, Array(retr[..<half]))
            self.leaving = false
            send(false, Array(retr[half...]))
        } else {
            send(false, retr)
        }
        send(true, Array("QUIT\r\n".utf8))
        send(false, Array("+OK bye\r\n".utf8))
        self.packet(from: client, to: server, seq: cseq, flags: 0x11, payload: [])
        self.packet(from: server, to: client, seq: sseq, flags: 0x11, payload: [])
    }
}

/// A message as RETR sends it, and its size as LIST reports it.
struct ByteBufferBytes {
    var stuffed: [UInt8]
    var size: Int
}

func message(octets: Int) -> ByteBufferBytes {
    var text = "From: bench@example.org\r\nSubject: large\r\n\r\n"
    var line = 0
    while text.utf8.count < octets {
        line += 1
        text += (line % 40 == 0 ? "." : "z") + String(repeating: "q", count: 70) + "\r\n"
    }
    let bytes = Array(text.utf8)
    var buffer = ByteBuffer()
    DotStuffing.writeBody(bytes, into: &buffer)
    return ByteBufferBytes(stuffed: Array(buffer.readableBytesView), size: DotStuffing.octets(of: bytes))
}

/// CPU seconds (user and system) used by this process's finished children so far.
func childCPU() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_CHILDREN.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Wall-clock and CPU seconds of one run. CPU time is what other load on a shared machine disturbs least.
func time(_ path: String, _ arguments: [String]) -> (seconds: Double, cpu: Double, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    let start = Date()
    let cpuBefore = childCPU()
    do { try process.run() } catch { return (0, 0, "cannot start \(path): \(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (Date().timeIntervalSince(start), childCPU() - cpuBefore, String(decoding: data, as: UTF8.self))
}

let body = message(octets: 2 * 1024 * 1024)
var writer = CaptureWriter()
var sessions = 0
while writer.data.count < megabytes * 1_000_000 {
    writer.session(sessions, body: body)
    sessions += 1
}
let path = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-inspect-bench-\(getpid()).pcap").path
try writer.data.write(to: URL(fileURLWithPath: path))
// --keep leaves the capture in place (for profiling popgate inspect on it).
defer { if !options.keep { try? FileManager.default.removeItem(atPath: path) } }
print(
    "popgate-inspect-bench: \(writer.data.count / 1_000_000) MB capture \(options.keep ? path : ""), \(sessions) sessions with a 2 MiB RETR each"
)

let popgate = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
    "popgate"
).path
var midwayWriter = CaptureWriter()
for index in 0..<sessions { midwayWriter.session(index, body: body, midway: true) }
let midwayPath = FileManager.default.temporaryDirectory.appendingPathComponent(
    "popgate-inspect-midway-\(getpid()).pcap"
)
.path
try midwayWriter.data.write(to: URL(fileURLWithPath: midwayPath))
let midwaySize = midwayWriter.data.count
defer { if !options.keep { try? FileManager.default.removeItem(atPath: midwayPath) } }
// Start-up (the binary, libpcap, the first allocations) on an empty capture, taken off each figure so that the
// per-octet cost is what is compared.
let empty = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-inspect-empty-\(getpid()).pcap").path
try CaptureWriter().data.write(to: URL(fileURLWithPath: empty))
defer { try? FileManager.default.removeItem(atPath: empty) }
let gigabytes = Double(writer.data.count) / 1e9
/// `--before PATH`: an earlier popgate build measured in the same run.
let before = options.before
var ourCPU = 0.0
var ours = (seconds: 0.0, cpu: 0.0, output: "")
for (name, binary) in [("popgate inspect --summary", popgate)] + (before.map { [("popgate before", $0)] } ?? []) {
    let startup = (0..<5).map { _ in time(binary, ["inspect", "--summary", empty]).cpu }.min()!
    // Best of five for popgate and of two for tshark: the machine is shared and noisy.
    let runs = (0..<5).map { _ in time(binary, ["inspect", "--summary", path]) }
    let best = runs.min { $0.seconds < $1.seconds }!
    let cpu = runs.map(\.cpu).min()!
    if binary == popgate {
        (ourCPU, ours) = (cpu, best)
        // The same sessions caught half-way through their RETR: no more per octet than whole ones.
        let midwayRuns = (0..<5).map { _ in time(binary, ["inspect", "--summary", midwayPath]) }
        let midwayCPU = midwayRuns.map(\.cpu).min()!
        print(
            String(
                format: "  popgate, sessions mid-way   %7.2f s CPU for %d MB: %.2f GB per CPU second",
                midwayCPU,
                midwaySize / 1_000_000,
                Double(midwaySize) / 1e9 / max(midwayCPU - startup, 0.001)
            )
        )
    }
    let sessionsRead = best.output.split(separator: "\n").filter { $0.hasPrefix("session ") }.count
    let padded = name + String(repeating: " ", count: max(0, 27 - name.count))
    print(
        "  " + padded
            + String(
                format:
                    " %7.2f s   %7.2f s CPU   %d sessions read   %.2f GB per CPU second (start-up %.3f s taken off)",
                best.seconds,
                cpu,
                sessionsRead,
                gigabytes / max(cpu - startup, 0.001),
                startup
            )
    )
}

let tsharkPath = ["/usr/bin/tshark", "/usr/local/bin/tshark"].first { FileManager.default.isExecutableFile(atPath: $0) }
if let tsharkPath {
    let theirs = (0..<2).map { _ in
        time(tsharkPath, ["-r", path, "-Y", "pop", "-T", "fields", "-e", "pop.request.command"])
    }
    let tsharkCPU = theirs.map(\.cpu).min()!
    let best = theirs.min { $0.seconds < $1.seconds }!
    let commands = best.output.split(separator: "\n").filter { !$0.isEmpty }.count
    print(
        String(
            format: "  tshark -Y pop               %7.2f s   %7.2f s CPU   %d requests read",
            best.seconds,
            tsharkCPU,
            commands
        )
    )
    print(
        String(
            format: "  popgate is %.1f× faster than tshark in elapsed time, %.1f× in CPU time (target: 20×)",
            best.seconds / max(ours.seconds, 0.001),
            tsharkCPU / max(ourCPU, 0.001)
        )
    )
} else {
    print("  tshark is not installed: no comparison (scripts/test.sh installs it)")
}
