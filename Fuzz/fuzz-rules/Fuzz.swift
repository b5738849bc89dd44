import FuzzDriver
import POP3Rules

/// libFuzzer's entry: arbitrary text as a rules file (includes read back as the same text, so a loop of
/// includes is exercised), then what the parsed rules decide for a few addresses and names. Checked: no crash,
/// every problem has a line within the file, and the same text parses the same twice.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRules(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    let (rules, problems) = RulesParser.parse(text, file: "fuzz.rules") { _ in text }
    // Lines end at LF or CRLF (one character to Swift), as the parser counts them.
    let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }.count
    for problem in problems where problem.file == "fuzz.rules" {
        precondition(problem.line >= 1 && problem.line <= lines, "a problem outside the file: \(problem)")
    }
    let (again, _) = RulesParser.parse(text, file: "fuzz.rules") { _ in text }
    precondition(again == rules, "the same text parsed twice differently")
    var state = RulesState(rules)
    for (index, address) in ["192.0.2.7", "::ffff:10.1.2.3", "2001:db8::1", "127.0.0.1"].enumerated() {
        guard let address = RuleAddress(address) else { continue }
        _ = state.admit(address, now: Double(index))
        _ = state.authFailed(address, user: "alice", now: Double(index))
        _ = state.blocked(address, user: "ALICE", now: Double(index))
    }
    _ = rules.explain(address: RuleAddress("192.0.2.7")!, user: "archive@example.org", tls: false)
    _ = rules.commandDenied("dele", user: "archive@example.org")
    return 0
}

@_cdecl("fuzz_rules_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzRules(data, size) }
}
