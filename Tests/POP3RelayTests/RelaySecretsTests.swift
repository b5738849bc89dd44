import Foundation
import NIOCore
import POP3Core
import POP3NIO
import PopgateTestSupport
import Testing

@testable import POP3Relay

/// No password, APOP digest or SASL payload in any output, whatever the client sends.
@Suite("Relay outputs hold no secret", .timeLimit(.minutes(1)))
struct RelaySecretsTests {
    @Test("PASS behind a tab, colon, vertical tab or non-breaking space, and an over-long SASL line: masked everywhere")
    func noSecretInOutputs() async throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("popgate-secrets-\(getpid())").path
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let separators = ["\t", ":", "\u{0B}", "\u{A0}", "\u{C2}\u{A0}"]
        try await FaultyUpstream.withGateway(
            greeting: "+OK hi\r\n",
            respond: { line in
                switch line {
                case "AUTH PLAIN": "+ \r\n"
                case "*": "-ERR cancelled\r\n"
                case "QUIT": "+OK bye\r\n<close>"
                default: "+OK\r\n"
                }
            },
            adjust: {
                $0.transcripts = base + "/t"
                $0.pcap = base + "/p"
            },
            body: { gateway in
                for separator in separators {
                    let client = try RawSocket(port: gateway.port)
                    // Latin-1 octets as sent: each scalar below 0x100 is one octet on the wire.
                    let line = Array(("PASS" + separator + "s3cr3t-Pw").unicodeScalars.map { UInt8($0.value) })
                    client.send("USER alice\r\n")
                    client.sendBytes(line + [0x0D, 0x0A])
                    client.send("QUIT\r\n")
                    client.shutdownWrite()
                    _ = await client.readAll(seconds: 5)
                    client.close()
                }
                let sasl = try RawSocket(port: gateway.port)
                sasl.send("AUTH PLAIN\r\n" + String(repeating: "U0VDUkVU", count: 2500) + "\r\nQUIT\r\n")
                sasl.shutdownWrite()
                _ = await sasl.readAll(seconds: 5)
                sasl.close()
                await gateway.sink.waitForEnded(separators.count + 1)
            }
        )
        var files = 0
        for directory in [base + "/t", base + "/p"] {
            for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
                let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
                files += 1
                #expect(data.range(of: Data("s3cr3t".utf8)) == nil, "\(name)")
                #expect(data.range(of: Data("U0VDUkVU".utf8)) == nil, "\(name)")
            }
        }
        // A .txt, a .jsonl and a .pcap for every session.
        #expect(files == 3 * (separators.count + 1))
    }
}
