import FuzzDriver
import NIOCore
import POP3Core

/// libFuzzer's entry: the conversation machine fed a client stream and a server stream, interleaved in chunks the
/// input chooses. Each chunk is a header octet (its top bit the side, the rest its length, 0 to 127) and its octets.
/// Checked: no crash; feeding every chunk one octet at a time gives the same events (once body chunks and
/// opaque counts, whose boundaries follow the input's, are merged); the closes end it cleanly.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConversation(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // Long seeds (whole captures) are cut: octet-by-octet feeding under the address sanitizer is slow.
    let count = min(size, 16_384)
    var chunks: [(client: Bool, bytes: [UInt8])] = []
    var index = 0
    while index < count {
        let header = data[index]
        index += 1
        let length = min(Int(header & 0x7F), count - index)
        chunks.append((header & 0x80 == 0, Array(UnsafeBufferPointer(start: data + index, count: length))))
        index += length
    }
    func run(octetByOctet: Bool) -> [ConversationEvent] {
        var machine = ConversationMachine()
        var events: [ConversationEvent] = []
        for chunk in chunks {
            let whole = ByteBuffer(bytes: chunk.bytes)
            // One octet at a time as slices of the chunk: no allocation per octet, which was most of the time.
            let pieces =
                octetByOctet ? (0..<whole.readableBytes).map { whole.getSlice(at: $0, length: 1)! } : [whole]
            for buffer in pieces {
                if chunk.client {
                    machine.clientSent(buffer, into: &events)
                } else {
                    machine.serverSent(buffer, into: &events)
                }
            }
        }
        events += machine.clientClosed()
        events += machine.serverClosed()
        return events.mergingChunks()
    }
    let whole = run(octetByOctet: false)
    let single = run(octetByOctet: true)
    precondition(whole == single, "feeding octet by octet changed what the machine said")
    return 0
}

@_cdecl("fuzz_conversation_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzConversation(data, size) }
}
