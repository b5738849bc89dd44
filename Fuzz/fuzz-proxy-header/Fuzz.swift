import FuzzDriver
import POP3Core

/// libFuzzer's entry: arbitrary octets as a PROXY header, whole and a byte at a time. Checked: no crash, a
/// header never claims more octets than it was given, and feeding in pieces agrees with feeding whole.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProxyHeader(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: count))
    let whole = ProxyHeader.parse(bytes)
    if case .header(let header) = whole { precondition(header.length <= bytes.count && header.length > 0) }
    // A prefix shorter than a header needs more data or is already invalid, never a different header.
    for cut in Set([bytes.count / 2, bytes.count - 1, 16, 15]) where cut >= 0 && cut < bytes.count {
        if case .header(let early) = ProxyHeader.parse(bytes[..<cut]) {
            guard case .header(let full) = whole else { preconditionFailure("a prefix is a header, the whole is not") }
            precondition(early == full, "a prefix reads as another header")
        }
    }
    return 0
}

@_cdecl("fuzz_proxy_header_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzProxyHeader(data, size) }
}
