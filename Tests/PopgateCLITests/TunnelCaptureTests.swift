import Foundation
import PopgateTestSupport
import Testing

/// POP3 inside the encapsulations real captures hold, in synthetic captures: popgate inspect reads the same
/// commands tshark does, keeps two tunnels with the same inner addresses apart, and counts what it could not
/// decode.
@Suite("popgate inspect: tunnels", .timeLimit(.minutes(2)))
struct TunnelCaptureTests {
    static let tunnels: [(String, @Sendable (UInt32, [UInt8]) -> [UInt8], Bool)] = [
        ("VXLAN", { Encapsulation.vxlan($0, $1) }, false),
        ("GRE", { Encapsulation.gre(key: $0, $1) }, false),
        ("ERSPAN", { Encapsulation.erspan(session: UInt16($0), $1) }, false),
        ("MPLS", { Encapsulation.mpls([16 + $0, 100], $1) }, false),
        ("L2TP", { Encapsulation.l2tp(session: UInt16($0), $1) }, false),
        ("GTP-U", { Encapsulation.gtpu(teid: $0, $1) }, false),
        ("IP-in-IP", { _, ip in Encapsulation.ipInIP(ip) }, false),
        ("6in4", { _, ip in Encapsulation.ipInIP(ip) }, true),
    ]

    /// Two connections with the same inner addresses and ports, in tunnels 1 and 2: one after the other
    /// (tshark, which does not key connections by tunnel, sees a port reused), or packet by packet in turn.
    static func capture(
        _ wrap: @escaping @Sendable (UInt32, [UInt8]) -> [UInt8],
        ipv6: Bool,
        interleaved: Bool = false
    ) throws -> String {
        var connections: [[[UInt8]]] = []
        for id in [UInt32(1), 2] {
            var capture = SyntheticCapture(dlt: 1)
            capture.ipv6 = ipv6
            capture.initialSequence = (1000 * id, 7000 * id)
            capture.wrap = { wrap(id, $0) }
            connections.append(capture.frames)
        }
        var frames =
            interleaved ? zip(connections[0], connections[1]).flatMap { [$0, $1] } : connections.flatMap { $0 }
        // And one packet nothing reads: ARP.
        frames.append(Encapsulation.ethernet(0x0806, Array(repeating: 0, count: 28)))
        return try InspectProcessTests.temporaryFile(SyntheticCapture.file(frames, dlt: 1))
    }

    static func verbs(_ json: String) -> [String] {
        json.split(separator: "\n").filter { $0.contains("\"kind\":\"command\"") }.compactMap { line in
            line.components(separatedBy: "\"verb\":\"").last?.split(separator: "\"").first.map(String.init)
        }
    }

    @Test("each tunnel: the POP3 commands tshark reads, and what was not decoded counted", arguments: 0..<8)
    func tunnel(_ index: Int) async throws {
        let (name, wrap, ipv6) = Self.tunnels[index]
        let path = try Self.capture(wrap, ipv6: ipv6)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, json) = try await InspectProcessTests.inspect(["--format", "json", path])
        #expect(status == 0)
        let tshark = try await runTool(
            "tshark",
            ["-r", path, "-Y", "pop.request.command", "-T", "fields", "-e", "pop.request.command"]
        )
        let expected = tshark.split(separator: "\n").map(String.init)
        #expect(expected.count == 10, "\(name): tshark read \(expected)")
        #expect(Self.verbs(json) == expected, "\(name)")
        let (_, summary) = try await InspectProcessTests.inspect(["--summary", path])
        #expect(summary.split(separator: "\n").filter { $0.hasPrefix("session ") }.count == 2, "\(name): \(summary)")
        #expect(summary.contains("1 packet (42 octets) not decoded as TCP: ARP 1 (42 octets)"), "\(summary)")
        // Only the cleartext login each session holds (R35): nothing in the tunnels confuses the reading.
        let anomalies = json.split(separator: "\n").filter { $0.contains("\"kind\":\"anomaly\"") }
        #expect(
            anomalies.count == 2 && anomalies.allSatisfy { $0.contains("\"rule\":\"R35\"") },
            "\(name): \(anomalies)"
        )
    }

    @Test("two tunnels with the same inner connection, packet by packet in turn, stay two sessions", arguments: 0..<6)
    func apart(_ index: Int) async throws {
        let (name, wrap, ipv6) = Self.tunnels[index]
        let path = try Self.capture(wrap, ipv6: ipv6, interleaved: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (_, summary) = try await InspectProcessTests.inspect(["--summary", path])
        let sessions = summary.split(separator: "\n").filter { $0.hasPrefix("session ") }
        #expect(sessions.count == 2, "\(name): \(summary)")
        #expect(
            sessions.allSatisfy {
                $0.contains(
                    " in \(name == "ERSPAN" ? "ERSPAN session" : name == "GRE" ? "GRE key" : name == "MPLS" ? "MPLS label" : name == "L2TP" ? "L2TP session" : name == "GTP-U" ? "GTP-U TEID" : "VXLAN")"
                )
            },
            "\(summary)"
        )
        #expect(
            sessions.allSatisfy { $0.contains("5 commands, 6 replies (1 multi-line), 1 anomaly (1 security)") },
            "\(summary)"
        )
    }
}
