#if canImport(Glibc)
import Glibc
#endif

public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>, Int) -> CInt

private typealias Driver =
    @convention(c) (
        UnsafeMutablePointer<CInt>, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        FuzzTarget
    ) -> CInt

/// SwiftPM links an executable's entry as `<module>_main`, in place of libFuzzer's own `main`: each target's entry
/// hands its command line to libFuzzer's driver, found at run time so that a build without `--sanitize=fuzzer`
/// (CI's ordinary build) still links, and says how to build it instead.
public func runFuzzer(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
    _ target: FuzzTarget
) -> CInt {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "LLVMFuzzerRunDriver") else {
        let message =
            "not built for fuzzing: swift build --product NAME --sanitize=fuzzer --sanitize=address"
            + " -Xswiftc -sanitize=fuzzer,address -Xswiftc -O (scripts/fuzz.sh)\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        return 1
    }
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return unsafeBitCast(symbol, to: Driver.self)(&count, &arguments, target)
}
