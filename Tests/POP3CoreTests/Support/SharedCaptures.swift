import Foundation
import NIOCore
import POP3Core
import PopgateTestSupport

/// The public captures in `../shared/captures/`, next to the checkout (CI places them there too).
enum SharedCaptures {
    static var directory: URL {
        if let override = ProcessInfo.processInfo.environment["POPGATE_SHARED_CAPTURES"] {
            return URL(fileURLWithPath: override)
        }
        // Tests/POP3CoreTests/Support/SharedCaptures.swift → the package root → its sibling shared/.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return root.deletingLastPathComponent().appendingPathComponent("shared/captures")
    }

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
}

struct ToolError: Error, CustomStringConvertible {
    var description: String
}

/// Runs a program and returns its standard output.
func run(_ program: String, _ arguments: [String]) throws -> String {
    let (status, output) = try runProgram(program, arguments)
    guard status == 0 else {
        throw ToolError(description: "\(program) \(arguments.joined(separator: " ")) exited \(status)")
    }
    return String(decoding: output, as: UTF8.self)
}

/// One TCP payload of a capture, as tshark reports it.
struct Segment {
    var stream: Int
    var fromServer: Bool
    var time: Double
    var payload: [UInt8]
}

/// The TCP payloads of a capture, in frame order, retransmissions left out; tshark does the decoding
/// until the project's own capture reader exists.
func tsharkSegments(_ file: String, serverPort: Int = 110) throws -> [Segment] {
    let text = try run(
        "tshark",
        [
            "-r", file, "-Y", "tcp.len > 0 && !tcp.analysis.retransmission", "-T", "fields",
            "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "frame.time_epoch", "-e", "tcp.payload",
        ]
    )
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count == 4, let stream = Int(fields[0]), let port = Int(fields[1]), let time = Double(fields[2])
        else {
            return nil
        }
        return Segment(stream: stream, fromServer: port == serverPort, time: time, payload: hexBytes(fields[3]))
    }
}

func hexBytes(_ hex: Substring) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(hex.utf8.count / 2)
    var high: UInt8?
    for c in hex.utf8 {
        let v: UInt8
        switch c {
        case 0x30...0x39: v = c - 0x30
        case 0x61...0x66: v = c - 0x61 + 10
        case 0x41...0x46: v = c - 0x41 + 10
        default: continue
        }
        if let h = high {
            bytes.append(h << 4 | v)
            high = nil
        } else {
            high = v
        }
    }
    return bytes
}

/// Each TCP stream's events, fed segment by segment (or byte by byte), with both sides closed at the end.
func sessions(_ segments: [Segment], byteByByte: Bool = false) -> [Int: [ConversationEvent]] {
    var machines: [Int: ConversationMachine] = [:]
    var events: [Int: [ConversationEvent]] = [:]
    for segment in segments {
        var machine = machines[segment.stream] ?? ConversationMachine()
        var out = events[segment.stream] ?? []
        let pieces = byteByByte ? segment.payload.map { [$0] } : [segment.payload]
        for piece in pieces {
            if segment.fromServer {
                machine.serverSent(ByteBuffer(bytes: piece), at: segment.time, into: &out)
            } else {
                machine.clientSent(ByteBuffer(bytes: piece), at: segment.time, into: &out)
            }
        }
        machines[segment.stream] = machine
        events[segment.stream] = out
    }
    for (stream, var machine) in machines {
        events[stream]! += machine.clientClosed()
        events[stream]! += machine.serverClosed()
    }
    return events
}
