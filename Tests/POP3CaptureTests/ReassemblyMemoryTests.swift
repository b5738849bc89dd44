import NIOCore
import POP3Core
import Testing

@testable import POP3Capture

/// The memory the inspector may hold for segments waiting behind holes: per direction and for all connections.
@Suite("Reassembly memory limits")
struct ReassemblyMemoryTests {
    static func endpoint(_ host: UInt8, _ port: Int) -> TCPEndpoint {
        let address = [10, 0, 0, host].withUnsafeBufferPointer { IPAddress($0, at: 0, length: 4) }
        return TCPEndpoint(address: address, port: port)
    }

    /// A server greeting, then a client segment that leaves a 10-octet hole in front of `waiting` octets.
    static func holeyFlow(_ inspector: CaptureInspector, client: UInt8, waiting: Int) {
        let c = Self.endpoint(client, 40000)
        let s = Self.endpoint(100, 110)
        inspector.packet(TCPSegment(source: c, destination: s, sequence: 99, flags: 0x02, payload: ByteBuffer()), at: 1)
        inspector.packet(
            TCPSegment(source: s, destination: c, sequence: 499, flags: 0x12, payload: ByteBuffer()),
            at: 1
        )
        inspector.packet(
            TCPSegment(
                source: s,
                destination: c,
                sequence: 500,
                flags: 0x18,
                payload: ByteBuffer(string: "+OK hi\r\n")
            ),
            at: 2
        )
        let text = "NOOP\r\n" + String(repeating: "x", count: waiting - 6)
        inspector.packet(
            TCPSegment(source: c, destination: s, sequence: 110, flags: 0x18, payload: ByteBuffer(string: text)),
            at: 3
        )
    }

    /// Gaps the machine was told of.
    static func toldGaps(_ session: CaptureInspector.Session) -> Int {
        session.events.filter {
            if case .annotation(_, let text) = $0.event { text.contains("missing from the capture") } else { false }
        }.count
    }

    @Test("past the overall limit the connection holding most gives up its hole, and the machine is told")
    func overall() throws {
        var options = CaptureInspector.Options()
        options.totalReassemblyLimit = 1000
        let inspector = CaptureInspector(options: options)
        Self.holeyFlow(inspector, client: 1, waiting: 400)
        #expect(inspector.waitingOctets == 400)
        Self.holeyFlow(inspector, client: 2, waiting: 700)
        // 1100 > 1000: the second (700 waiting) gives up; the first still waits.
        #expect(inspector.totalLimitHits == 1)
        #expect(inspector.flowLimitHits == 0)
        #expect(inspector.waitingOctets == 400)
        let sessions = inspector.sessions
        try #require(sessions.count == 2)
        #expect(sessions[1].limitHits == 1 && sessions[1].gaps == 1 && Self.toldGaps(sessions[1]) == 1)
        #expect(sessions[0].limitHits == 0 && sessions[0].gaps == 0 && Self.toldGaps(sessions[0]) == 0)
        inspector.finish()
        #expect(inspector.waitingOctets == 0)
    }

    @Test("within the limits nothing is given up until the end")
    func within() {
        let inspector = CaptureInspector(options: CaptureInspector.Options())
        Self.holeyFlow(inspector, client: 1, waiting: 400)
        Self.holeyFlow(inspector, client: 2, waiting: 700)
        #expect(inspector.totalLimitHits == 0 && inspector.flowLimitHits == 0)
        #expect(inspector.waitingOctets == 1100)
    }

    @Test("the per-direction limit is counted apart from the overall one")
    func perFlow() {
        var options = CaptureInspector.Options()
        options.reassemblyLimit = 500
        let inspector = CaptureInspector(options: options)
        Self.holeyFlow(inspector, client: 1, waiting: 700)
        #expect(inspector.flowLimitHits == 1)
        #expect(inspector.totalLimitHits == 0)
        #expect(inspector.waitingOctets == 0)
    }
}

extension ReassemblyMemoryTests {
    @Test("a live capture lets go of ended sessions; numbering goes on")
    func forgetEnded() {
        let inspector = CaptureInspector(options: CaptureInspector.Options())
        let c = Self.endpoint(1, 40000)
        let s = Self.endpoint(100, 110)
        func segment(_ from: TCPEndpoint, _ to: TCPEndpoint, _ seq: UInt32, _ flags: UInt8, _ text: String) {
            inspector.packet(
                TCPSegment(
                    source: from,
                    destination: to,
                    sequence: seq,
                    flags: flags,
                    payload: ByteBuffer(string: text)
                ),
                at: 1
            )
        }
        segment(s, c, 500, 0x18, "+OK hi\r\n")
        segment(s, c, 508, 0x11, "")
        segment(c, s, 100, 0x11, "")
        Self.holeyFlow(inspector, client: 2, waiting: 100)
        #expect(inspector.sessions.map(\.number) == [1, 2])
        inspector.forgetEnded()
        #expect(inspector.sessions.map(\.number) == [2])
        Self.holeyFlow(inspector, client: 3, waiting: 100)
        #expect(inspector.sessions.map(\.number) == [2, 3])
    }
}
