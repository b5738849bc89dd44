import Logging
import POP3Relay
import ServiceLifecycle
import UnixSignals

/// The one reload path: SIGHUP reads the configuration again and, if all of it loads, swaps it in for the
/// sessions that start from then on (open sessions keep theirs). A reload that fails changes nothing and logs
/// why. Listeners and output directories are not reloaded; the log says so when they changed. SIGUSR1 and
/// SIGUSR2 are taken so that they do not kill the gateway; they only log that they did nothing.
struct ReloadService: Service {
    let signals: UnixSignalsSequence
    let server: RelayServer
    /// Reads the configuration anew: the file, then the flags on top of it.
    let load: @Sendable () throws -> RelayConfiguration
    let logger: Logger

    static func trapping() async -> UnixSignalsSequence {
        await UnixSignalsSequence(trapping: .sighup, .sigusr1, .sigusr2)
    }

    func run() async throws {
        for await signal in self.signals.cancelOnGracefulShutdown() {
            if signal == .sighup {
                self.reload()
            } else {
                let name = signal == .sigusr1 ? "SIGUSR1" : "SIGUSR2"
                self.logger.notice("\(name) received; it does nothing here (SIGHUP reloads the configuration)")
            }
        }
    }

    func reload() {
        let new: RelayConfiguration
        do {
            new = try self.load()
        } catch {
            self.logger.error("reload failed, the configuration in force is kept: \(error)")
            return
        }
        let old = self.server.configuration
        // Certificates are read again at their paths (a renewed pair is the common case); a listener whose
        // addresses or upstream changed needs a restart.
        func bound(_ listeners: [RelayConfiguration.Listener]) -> [[String]] {
            listeners.map { ($0.listen + $0.listenTLS).map(\.description) + [$0.upstream.description] }
        }
        do {
            try self.server.reloadTLS(new)
        } catch {
            self.logger.error("reload failed, the configuration in force is kept: \(error)")
            return
        }
        var kept: [String] = []
        if bound(new.listeners) != bound(old.listeners) { kept.append("listeners") }
        if new.transcripts != old.transcripts { kept.append("transcripts") }
        if new.pcap != old.pcap { kept.append("pcap") }
        if new.transcriptBodies != old.transcriptBodies { kept.append("transcript-bodies") }
        if new.live != old.live { kept.append("live") }
        if new.outputBuffer != old.outputBuffer { kept.append("output-buffer-mib") }
        var applied = new
        // What was opened at start stays as it is; the rest applies to new sessions.
        applied.listeners = old.listeners
        for index in applied.listeners.indices where index < new.listeners.count {
            applied.listeners[index].certificate = new.listeners[index].certificate
            applied.listeners[index].key = new.listeners[index].key
        }
        applied.transcripts = old.transcripts
        applied.pcap = old.pcap
        applied.transcriptBodies = old.transcriptBodies
        applied.live = old.live
        applied.outputBuffer = old.outputBuffer
        self.server.reconfigure(applied)
        if kept.isEmpty {
            self.logger.info("reloaded the configuration; new sessions use it")
        } else {
            self.logger.warning(
                "reloaded the configuration; \(kept.joined(separator: ", ")) changed but are not reloaded: restart the gateway for them"
            )
        }
    }
}
