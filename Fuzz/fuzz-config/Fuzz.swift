import FuzzDriver
import POP3Relay

/// libFuzzer's entry: arbitrary text as `popgate serve --config FILE` (Yams, then every key's checks). Checked:
/// no crash; a refusal names the file; a configuration it accepts is accepted again from the same text with the
/// same listeners.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    var first = RelayConfiguration()
    do {
        try ConfigFile.apply(text, path: "fuzz.yaml", to: &first)
    } catch {
        precondition("\(error)".hasPrefix("fuzz.yaml"), "a refusal that does not name the file: \(error)")
        return 0
    }
    var second = RelayConfiguration()
    try? ConfigFile.apply(text, path: "fuzz.yaml", to: &second)
    precondition(first == second, "the same text read twice gave two configurations")
    return 0
}

@_cdecl("fuzz_config_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzConfig(data, size) }
}
