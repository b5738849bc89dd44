import ArgumentParser
import POP3Capture

/// The reassembly's memory limits, shared by `inspect` and `capture`.
struct ReassemblyOptions: ParsableArguments {
    @Option(
        name: .customLong("flow-buffer"),
        help: "Octets one direction of a connection may hold waiting for a missing segment (default 4M)."
    )
    var flowBuffer: ByteCount?

    @Option(
        name: .customLong("total-buffer"),
        help: "Octets all connections together may hold waiting (default 256M); past it the largest gives up a hole."
    )
    var totalBuffer: ByteCount?

    /// The inspector's options for these limits and the POP3 ports given (none: the defaults).
    func options(ports: [Int]) -> CaptureInspector.Options {
        var options = CaptureInspector.Options()
        if !ports.isEmpty { options.ports = Set(ports) }
        if let flowBuffer { options.reassemblyLimit = flowBuffer.octets }
        if let totalBuffer { options.totalReassemblyLimit = totalBuffer.octets }
        return options
    }

    /// A line for standard error when a limit was hit, naming the flag that raises it.
    static func report(_ inspector: CaptureInspector) -> String? {
        let flow = inspector.flowLimitHits
        guard flow + inspector.totalLimitHits > 0 else { return nil }
        var parts: [String] = []
        if flow > 0 {
            parts.append("a connection's waiting data passed --flow-buffer \(flow) time\(flow == 1 ? "" : "s")")
        }
        if inspector.totalLimitHits > 0 {
            let n = inspector.totalLimitHits
            parts.append("all connections' waiting data passed --total-buffer \(n) time\(n == 1 ? "" : "s")")
        }
        return "reassembly limits: " + parts.joined(separator: "; ")
            + "; each time a hole was given up and reported as a gap"
    }
}

/// A number of octets with an optional K, M or G suffix (powers of 1024): `4M`, `512K`, `1048576`.
struct ByteCount: ExpressibleByArgument, Sendable {
    var octets: Int

    init?(argument: String) {
        var text = argument.uppercased()
        if text.hasSuffix("IB") { text.removeLast(2) } else if text.hasSuffix("B") { text.removeLast() }
        var scale = 1
        switch text.last {
        case "K": scale = 1 << 10
        case "M": scale = 1 << 20
        case "G": scale = 1 << 30
        default: break
        }
        if scale > 1 { text.removeLast() }
        guard let value = Int(text), value > 0, value <= Int.max / scale else { return nil }
        self.octets = value * scale
    }

    static var defaultCompletionKind: CompletionKind { .default }
}
