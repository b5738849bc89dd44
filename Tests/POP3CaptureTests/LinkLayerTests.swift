import Foundation
import POP3Capture
import POP3Core
import PopgateTestSupport
import Testing

/// Captures built in the test, one per link type and IP version, holding the same POP3 session: each must
/// give that session to the inspector, and tshark must find the same commands in the file.
@Suite("Link layers and IP versions", .serialized, .timeLimit(.minutes(2)))
struct LinkLayerTests {
    enum Link: String, CaseIterable, Sendable {
        case ethernet, vlan, qinq, sll, sll2, null, loop, rawIP, rawIPv4v6

        var dlt: UInt32 {
            switch self {
            case .ethernet, .vlan, .qinq: 1
            case .sll: 113
            case .sll2: 276
            case .null: 0
            case .loop: 108
            case .rawIP: 101
            case .rawIPv4v6: 228  // 228 is IPv4 only, 229 IPv6 only; the version nibble decides here
            }
        }

        func header(ipv6: Bool) -> [UInt8] {
            let type: [UInt8] = ipv6 ? [0x86, 0xDD] : [0x08, 0x00]
            let macs: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]
            switch self {
            case .ethernet: return macs + type
            case .vlan: return macs + [0x81, 0x00, 0x00, 0x2A] + type
            case .qinq: return macs + [0x88, 0xA8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x2A] + type
            case .sll: return [0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0] + type
            case .sll2: return type + [0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]
            case .null:
                let family: UInt32 = ipv6 ? 24 : 2
                return withUnsafeBytes(of: family.littleEndian) { Array($0) }
            case .loop: return ipv6 ? [0, 0, 0, 30] : [0, 0, 0, 2]
            case .rawIP, .rawIPv4v6: return []
            }
        }
    }

    static func capture(_ link: Link, ipv6: Bool, extensionHeader: Bool = false) -> [UInt8] {
        var capture = SyntheticCapture(dlt: link.dlt, linkHeader: link.header(ipv6:))
        capture.ipv6 = ipv6
        capture.extensionHeader = extensionHeader
        return capture.bytes
    }

    static let cases: [(Link, Bool)] =
        Link.allCases.map { ($0, false) } + Link.allCases.filter { $0 != .rawIPv4v6 }.map { ($0, true) }

    @Test("the session is read the same on every link type, over IPv4 and IPv6", arguments: cases)
    func session(link: Link, ipv6: Bool) async throws {
        let path =
            NSTemporaryDirectory() + "popgate-link-\(link.rawValue)-\(ipv6 ? 6 : 4)-\(UUID().uuidString.prefix(6)).pcap"
        try Data(Self.capture(link, ipv6: ipv6)).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }

        let sessions = try SharedCaptureTests.inspect(file: path)
        try #require(sessions.count == 1)
        let session = sessions[0]
        let verbs = session.events.compactMap { event -> String? in
            if case .command(let c) = event.event { return c.verb }
            return nil
        }
        #expect(verbs == ["USER", "PASS", "STAT", "LIST", "QUIT"])
        #expect(session.server.port == 110 && session.client.port == 40000)
        #expect("\(session.client.address)" == (ipv6 ? "2001:db8::1" : "10.0.0.1"))
        #expect(session.machine.state == .closed)
        #expect(session.gaps == 0)

        let tshark = try await runTool(
            "tshark",
            ["-r", path, "-Y", "pop.request.command", "-T", "fields", "-e", "pop.request.command"]
        )
        #expect(tshark.split(separator: "\n").map(String.init) == verbs)
    }

    @Test("an IPv6 hop-by-hop header before TCP is stepped over")
    func ipv6ExtensionHeader() throws {
        let path = NSTemporaryDirectory() + "popgate-link-hbh-\(UUID().uuidString.prefix(6)).pcap"
        try Data(Self.capture(.ethernet, ipv6: true, extensionHeader: true)).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let sessions = try SharedCaptureTests.inspect(file: path)
        #expect(sessions.count == 1)
        #expect(sessions.first?.machine.commandCount == 5)
    }
}
