// Throughput of the conversation machine, beside two anchors measured in the same run:
// memcpy of the same bytes, and a bare memchr line count (the least any line reader must do).
// Run: swift run -c release popgate-machine-bench [--seconds N] (--help for more)
// Sections: large RETR bodies, short pairs, TLS relayed after STLS (records followed, not read), rules lookups.

import ArgumentParser
import Foundation
import NIOCore
import POP3Core
import POP3Rules

#if canImport(Glibc)
import Glibc
#endif

struct Options: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "popgate-machine-bench",
        abstract: "The conversation machine's throughput beside memcpy and a bare memchr line count.",
        discussion: """
            Sections: large RETR bodies, short pairs, TLS relayed after STLS, rules lookups.
            Example: popgate-machine-bench --seconds 5
            """
    )
    @Option(help: "Seconds per figure (at least three rounds each).") var seconds = 2.0

    func validate() throws {
        guard self.seconds > 0, self.seconds.isFinite else { throw ValidationError("--seconds must be above 0") }
    }
}
let seconds = Options.parseOrExit().seconds

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` repeatedly for about `seconds` (at least 3 rounds) and returns the best rate of `units` per second.
@MainActor
func measure(_ units: Double, _ body: () -> Void) -> Double {
    var best = 0.0
    let deadline = now() + seconds
    var rounds = 0
    repeat {
        let start = now()
        body()
        let elapsed = now() - start
        best = max(best, units / elapsed)
        rounds += 1
    } while now() < deadline || rounds < 3
    return best
}

// MARK: - Large RETR bodies

/// A 10 MB message: 76-character lines, one in 50 beginning with a dot.
func message(octets: Int) -> [UInt8] {
    var text = "From: bench@example.org\r\nSubject: large\r\n\r\n"
    var line = 0
    while text.utf8.count < octets {
        line += 1
        text += (line % 50 == 0 ? "." : "x") + String(repeating: "y", count: 75) + "\r\n"
    }
    return Array(text.utf8)
}

let body = message(octets: 10 * 1024 * 1024)
var wire = ByteBuffer(string: "+OK message follows\r\n")
DotStuffing.writeBody(body, into: &wire)
let retrCount = 10
let chunkSize = 64 * 1024
let serverChunks: [ByteBuffer] = {
    var chunks: [ByteBuffer] = []
    var all = wire
    while all.readableBytes > 0 {
        chunks.append(all.readSlice(length: min(chunkSize, all.readableBytes))!)
    }
    return chunks
}()
let sessionOctets = Double(wire.readableBytes * retrCount)

let machineRate = measure(sessionOctets) {
    var machine = ConversationMachine()
    var events: [ConversationEvent] = []
    events.reserveCapacity(256)
    machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), into: &events)
    machine.clientSent(ByteBuffer(string: "USER a\r\nPASS b\r\n"), into: &events)
    machine.serverSent(ByteBuffer(string: "+OK\r\n+OK\r\n"), into: &events)
    for _ in 0..<retrCount {
        events.removeAll(keepingCapacity: true)
        machine.clientSent(ByteBuffer(string: "RETR 1\r\n"), into: &events)
        for chunk in serverChunks {
            machine.serverSent(chunk, into: &events)
            events.removeAll(keepingCapacity: true)
        }
    }
    precondition(!machine.awaitingReply)
}

let scannerRate = measure(sessionOctets) {
    for _ in 0..<retrCount {
        var scanner = BodyScanner()
        for chunk in serverChunks {
            var input = chunk
            _ = scanner.scan(&input)
        }
    }
}

let flat = Array(wire.readableBytesView)
var sink = [UInt8](repeating: 0, count: flat.count)
let memcpyRate = measure(sessionOctets) {
    for _ in 0..<retrCount {
        flat.withUnsafeBytes { source in
            sink.withUnsafeMutableBytes { target in
                _ = memcpy(target.baseAddress!, source.baseAddress!, source.count)
            }
        }
    }
}

var lineCount = 0
let memchrRate = measure(sessionOctets) {
    for _ in 0..<retrCount {
        flat.withUnsafeBytes { raw in
            var p = raw.baseAddress!
            var left = raw.count
            while left > 0, let hit = memchr(p, 0x0A, left) {
                lineCount += 1
                let next = UnsafeRawPointer(hit) + 1
                left -= p.distance(to: next)
                p = next
            }
        }
    }
}

// MARK: - Short command/reply pairs

let pairs: [(ByteBuffer, ByteBuffer)] = [
    ("STAT\r\n", "+OK 3 1051\r\n"),
    ("LIST 1\r\n", "+OK 1 266\r\n"),
    ("UIDL 2\r\n", "+OK 2 popgate-sample-2\r\n"),
    ("NOOP\r\n", "+OK\r\n"),
    ("DELE 1\r\n", "+OK message 1 deleted\r\n"),
    ("RSET\r\n", "+OK maildrop has 3 messages\r\n"),
].map { (ByteBuffer(string: $0.0), ByteBuffer(string: $0.1)) }
let pairRounds = 50_000
var eventsPerRound = 0
@MainActor
func pairs(annotate: Bool) -> Double {
    measure(Double(pairRounds * pairs.count)) {
        var configuration = ConversationMachine.Configuration()
        configuration.annotate = annotate
        var machine = ConversationMachine(configuration: configuration)
        var events: [ConversationEvent] = []
        events.reserveCapacity(64)
        machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), into: &events)
        machine.clientSent(ByteBuffer(string: "USER a\r\n"), into: &events)
        machine.serverSent(ByteBuffer(string: "+OK\r\n"), into: &events)
        machine.clientSent(ByteBuffer(string: "PASS b\r\n"), into: &events)
        machine.serverSent(ByteBuffer(string: "+OK\r\n"), into: &events)
        var count = 0
        for _ in 0..<pairRounds {
            for (command, reply) in pairs {
                events.removeAll(keepingCapacity: true)
                machine.clientSent(command, into: &events)
                machine.serverSent(reply, into: &events)
                count += events.count
            }
        }
        eventsPerRound = count
    }
}
let pairRate = pairs(annotate: true)
let quietPairRate = pairs(annotate: false)
let eventRate = pairRate * Double(eventsPerRound) / Double(pairRounds * pairs.count)

// MARK: - TLS after STLS, relayed as it is (the machine follows its records, reads none)

/// TLS records of `type` with `length` octets of body each, back to back.
func records(_ count: Int, length: Int, type: UInt8 = 23) -> [UInt8] {
    var octets: [UInt8] = []
    octets.reserveCapacity(count * (length + 5))
    for _ in 0..<count {
        octets += [type, 0x03, 0x03, UInt8(length >> 8), UInt8(length & 0xFF)]
        octets += [UInt8](repeating: 0xA5, count: length)
    }
    return octets
}
/// The server's 10 MiB in full records read 64 KiB at a time, and 100,000 small records read one at a time.
let tunnelChunks: [ByteBuffer] = {
    var all = ByteBuffer(bytes: records(640, length: 16_384))
    var chunks: [ByteBuffer] = []
    while all.readableBytes > 0 { chunks.append(all.readSlice(length: min(chunkSize, all.readableBytes))!) }
    return chunks
}()
let smallRecords = (0..<100_000).map { _ in ByteBuffer(bytes: records(1, length: 40)) }
let tunnelOctets = Double(tunnelChunks.reduce(0) { $0 + $1.readableBytes })
@MainActor
func tunnel(_ chunks: [ByteBuffer], units: Double) -> Double {
    measure(units) {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        events.reserveCapacity(64)
        machine.serverSent(ByteBuffer(string: "+OK ready\r\n"), into: &events)
        machine.clientSent(ByteBuffer(string: "STLS\r\n"), into: &events)
        machine.serverSent(ByteBuffer(string: "+OK begin TLS\r\n"), into: &events)
        machine.clientSent(ByteBuffer(bytes: records(1, length: 512, type: 22)), into: &events)
        machine.serverSent(ByteBuffer(bytes: records(1, length: 2_048, type: 22)), into: &events)
        for chunk in chunks {
            events.removeAll(keepingCapacity: true)
            machine.serverSent(chunk, into: &events)
        }
        precondition(events.count == 1)
    }
}
let tunnelRate = tunnel(tunnelChunks, units: tunnelOctets)
let smallRecordRate = tunnel(smallRecords, units: Double(smallRecords.count))

// MARK: - Report

func mbps(_ rate: Double) -> String { String(format: "%8.0f MB/s", rate / 1e6) }
func ratio(_ a: Double, _ b: Double) -> String { String(format: "%.2f×", a / b) }
let perPair = Double(eventsPerRound) / Double(pairRounds * pairs.count)
print("popgate-machine-bench: conversation machine throughput (best of ~\(seconds) s per figure, 1 core)")
print("")
print("Large RETR bodies: \(retrCount) × \(body.count / 1_048_576) MiB messages in \(chunkSize / 1024) KiB chunks")
print(
    "  conversation machine      \(mbps(machineRate))   \(ratio(machineRate, memchrRate)) memchr, \(ratio(machineRate, memcpyRate)) memcpy"
)
print("  body scanner alone        \(mbps(scannerRate))   \(ratio(scannerRate, memchrRate)) memchr")
print("  anchor: memchr line count \(mbps(memchrRate))")
print("  anchor: memcpy            \(mbps(memcpyRate))")
print("")
print("Short command/reply pairs (STAT, LIST n, UIDL n, NOOP, DELE, RSET)")
print(String(format: "  %10.0f pairs/s   %10.0f events/s   (%.1f events per pair)", pairRate, eventRate, perPair))
print(String(format: "  %10.0f pairs/s without notes (a gateway that keeps no transcript)", quietPairRate))
print("")
print("TLS after STLS, relayed as it is: the server's records followed, not read")
print("  10 MiB in 16 KiB records, 64 KiB reads \(mbps(tunnelRate))   \(ratio(tunnelRate, memcpyRate)) memcpy")
print(String(format: "  %10.0f reads/s of one 45-octet record each", smallRecordRate))
print("")
print(machineRate >= 1e9 ? "body scanning target (>= 1 GB/s): met" : "body scanning target (>= 1 GB/s): NOT met")

// The rules' address lookup: a 10,000-prefix allow list, 10 million random addresses.
var generator = SystemRandomNumberGenerator()
let allowList = AddressSet(
    (0..<10_000).compactMap { _ in
        try? RulePrefix(
            parsing:
                "\(RuleAddress.v4(UInt32.random(in: 0...UInt32.max, using: &generator)))/\(Int.random(in: 12...32, using: &generator))"
        )
    }
)
let probes = (0..<10_000_000).map { _ in RuleAddress.v4(UInt32.random(in: 0...UInt32.max, using: &generator)) }
var bestLookups = 0.0
var matched = 0
for _ in 0..<3 {
    let start = now()
    matched = 0
    for probe in probes where allowList.contains(probe) { matched += 1 }
    bestLookups = max(bestLookups, Double(probes.count) / (now() - start))
}
print("")
print("Rules: address lookups against a 10,000-prefix list (\(allowList.rangeCount) ranges after merging)")
print(String(format: "  %10.0f lookups/s   (%d of 10 million matched)", bestLookups, matched))
print(
    bestLookups >= 1e7
        ? "address lookup target (>= 10 million/s): met" : "address lookup target (>= 10 million/s): NOT met"
)
