import Testing

@testable import POP3Core
@testable import POP3Relay

/// Every idle session holds a relay machine and its conversation machine: what they add inline is memory per
/// session (issue 17's target is 6 KB a session, NIO's own channels taking about 4.4 KB of it). A field that makes
/// them larger should be a choice, made here with its octets in view.
@Suite("Session footprint")
struct FootprintTests {
    @Test("the relay machine stays within its octets")
    func relayMachine() {
        // 8 of them are the events array the executor lends for each event (empty between events): it saves a
        // short session about twenty allocations.
        #expect(MemoryLayout<RelayMachine>.size <= 784, "RelayMachine: \(MemoryLayout<RelayMachine>.size) octets")
    }

    @Test("the conversation machine stays within its octets")
    func conversationMachine() {
        let size = MemoryLayout<ConversationMachine>.size
        // What only some sessions need lives on the heap or is shared (a mid-way pickup, 80 octets; the
        // configuration, 68): either one inline again breaks this bound. The TLS record walkers are a
        // dictionary's 8.
        #expect(size <= 472, "ConversationMachine: \(size) octets")
    }
}
