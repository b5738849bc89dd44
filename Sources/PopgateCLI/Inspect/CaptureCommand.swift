import ArgumentParser
import Dispatch
import NIOConcurrencyHelpers
import POP3Capture
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

extension Popgate {
    struct Capture: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read POP3 sessions live from a network interface and print their transcripts as they happen.",
            discussion: """
                Needs the right to capture (root, or CAP_NET_RAW). Stops on Ctrl-C or SIGTERM, or after --seconds.

                Examples:
                  popgate capture --interface eth0
                  popgate capture --interface lo --port 1110 --write session.pcap
                  popgate capture --interface any --filter "tcp port 110 and host 192.0.2.7" --format json
                """
        )

        @Option(help: "The interface to capture on (lo, eth0, any).")
        var interface: String

        @Option(name: .customLong("port"), help: "A POP3 port (repeatable; default 110 and 995).")
        var ports: [Int] = []

        @Option(help: "A BPF filter; default: the POP3 ports.")
        var filter: String?

        @Option(help: "Also save the raw packets to this pcap file.", completion: .file())
        var write: String?

        @Option(help: "Output: text or json.")
        var format: TranscriptRenderer.Format = .text

        @Option(help: "Colour: auto, always or never.")
        var color: ColorChoice = .auto

        @Option(help: "Stop after this many seconds.")
        var seconds: Double?

        @OptionGroup(title: "Reassembly memory")
        var reassembly: ReassemblyOptions

        func run() async throws {
            let options = self.reassembly.options(ports: self.ports)
            let filter = self.filter ?? options.ports.sorted().map { "tcp port \($0)" }.joined(separator: " or ")
            let source: PCAPSource
            do {
                source = try PCAPSource(interface: self.interface)
                try PacketDecoder.checkLinkType(source.linkType)
                try source.setFilter(filter)
                if let write { try source.write(to: write) }
            } catch {
                Terminal.shared.error("popgate capture: \(error)")
                throw ExitCode(2)
            }
            let stop = NIOLockedValueBox(false)
            let watcher = Task {
                await waitForInterrupt()
                stop.withLockedValue { $0 = true }
            }
            defer { watcher.cancel() }
            let chosen = options
            let format = self.format
            let color = self.color.enabled(for: Terminal.shared)
            let deadline = self.seconds.map { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 + $0 }
            let failure: (any Error)? = await withCheckedContinuation { done in
                DispatchQueue.global().async {
                    let printer = LivePrinter(format: format, color: color)
                    let inspector = CaptureInspector(options: chosen)
                    do {
                        while !stop.withLockedValue({ $0 }) {
                            if let deadline, Double(DispatchTime.now().uptimeNanoseconds) / 1e9 > deadline { break }
                            if case .packet(let segment?, let time) = try source.nextSegment() {
                                inspector.packet(segment, at: time)
                                printer.print(inspector)
                            }
                        }
                        inspector.finish()
                        printer.print(inspector, final: true)
                        source.flushWritten()
                        if let report = ReassemblyOptions.report(inspector) {
                            Terminal.shared.error("popgate capture: \(report)")
                        }
                        if let report = source.undecodedReport { Terminal.shared.error("popgate capture: \(report)") }
                        done.resume(returning: nil)
                    } catch {
                        inspector.finish()
                        printer.print(inspector, final: true)
                        done.resume(returning: error)
                    }
                }
            }
            if let failure {
                Terminal.shared.error("popgate capture: \(failure)")
                throw ExitCode(2)
            }
        }
    }
}

/// Prints each session's events as they come, with its header first and its end line last; ended sessions
/// are let go, so a capture that runs for days holds only the open ones.
final class LivePrinter {
    private var renderers: [Int: TranscriptRenderer] = [:]
    private var printed: [Int: Int] = [:]
    private let format: TranscriptRenderer.Format
    private let color: Bool

    init(format: TranscriptRenderer.Format, color: Bool) {
        self.format = format
        self.color = color
    }

    func print(_ inspector: CaptureInspector, final: Bool = false) {
        var lines: [String] = []
        for session in inspector.sessions {
            var renderer =
                self.renderers[session.number]
                ?? {
                    var r = TranscriptRenderer(session: String(session.number), format: self.format, color: self.color)
                    lines += r.start(
                        time: session.started,
                        client: session.client.description,
                        server: session.serverLabel
                    )
                    return r
                }()
            let done = self.printed[session.number] ?? 0
            for (time, event) in session.events.dropFirst(done) { lines += renderer.render(event, time: time) }
            if session.isClosed || final {
                lines += renderer.end(
                    time: session.events.last?.time ?? session.started,
                    summary: Popgate.Inspect.describe(session),
                    state: session.captureEnded ? "capture-ended" : nil
                )
                self.renderers[session.number] = nil
                self.printed[session.number] = nil
            } else {
                self.printed[session.number] = session.events.count
                self.renderers[session.number] = renderer
            }
        }
        inspector.forgetEnded()
        Terminal.shared.write(lines)
    }
}
