import FuzzDriver
import POP3Capture

/// libFuzzer's entry: frames below libpcap, as a capture would hand them over: the first octet picks a link type,
/// then each frame is a two-octet length and its octets. Every frame is decoded (link layers, tunnels, IPv4 and
/// IPv6, TCP) and each TCP segment goes to the inspector (reassembly, then the conversation machine). Checked:
/// no crash; a segment's payload is never longer than its frame; the reassembly's holding stays within its
/// limit.
/// Made once: any port, so the fuzzer need not find 110 to reach the machine; small reassembly limits.
let fuzzOptions: CaptureInspector.Options = {
    var options = CaptureInspector.Options()
    options.reassemblyLimit = 64 << 10
    options.totalReassemblyLimit = 256 << 10
    options.ports = Set(0...65535)
    return options
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPackets(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let linkTypes: [Int32] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]
    let link = linkTypes[Int(data[0]) % linkTypes.count]
    let inspector = CaptureInspector(options: fuzzOptions)
    var index = 1
    var time = 0.0
    while index + 2 <= count {
        let length = min(Int(data[index]) << 8 | Int(data[index + 1]), count - index - 2)
        let frame = UnsafeBufferPointer(start: data + index + 2, count: length)
        index += 2 + length
        time += 0.001
        guard let segment = PacketDecoder.decode(frame, linkType: link).segment else { continue }
        precondition(segment.payload.readableBytes <= length, "a payload longer than its frame")
        inspector.packet(segment, at: time)
    }
    inspector.finish()
    return 0
}

@_cdecl("fuzz_packets_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzPackets(data, size) }
}
