import Logging
import NIOConcurrencyHelpers
import POP3Relay
import POP3Rules
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
    /// How often the rules files are looked at for a change.
    var rulesPoll: Duration = .seconds(2)
    /// The rules file and those it includes, as last read.
    private let watched = NIOLockedValueBox<[String]>([])

    static func trapping() async -> UnixSignalsSequence {
        await UnixSignalsSequence(trapping: .sighup, .sigusr1, .sigusr2)
    }

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.watchRules() }
            for await signal in self.signals.cancelOnGracefulShutdown() {
                if signal == .sighup {
                    self.reload()
                } else {
                    let name = signal == .sigusr1 ? "SIGUSR1" : "SIGUSR2"
                    self.logger.notice("\(name) received; it does nothing here (SIGHUP reloads the configuration)")
                }
            }
            group.cancelAll()
        }
    }

    /// Reloads the rules when the rules file, or one it includes, changes: its size, time or inode.
    private func watchRules() async {
        guard self.server.rules != nil, let file = self.server.configuration.rules else { return }
        self.watched.withLockedValue { $0 = RulesFile.load(file).files }
        var seen = self.stamps()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: self.rulesPoll)
            let now = self.stamps()
            guard now != seen else { continue }
            seen = now
            guard let file = self.server.configuration.rules else { continue }
            self.logger.info("the rules in \(file) changed; reading them again")
            if let rules = self.readRules(file) { self.apply(rules, from: file) }
        }
    }

    private func stamps() -> [String: String] {
        var stamps: [String: String] = [:]
        for path in self.watched.withLockedValue({ $0 }) {
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let time = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            let size = attributes?[.size] as? Int ?? -1
            let inode = attributes?[.systemFileNumber] as? Int ?? 0
            stamps[path] = "\(time) \(size) \(inode)"
        }
        return stamps
    }

    /// The rules at `file`, or nil with each error logged (the rules in force are kept).
    func readRules(_ file: String) -> Rules? {
        let (rules, problems, files) = RulesFile.load(file)
        guard problems.isEmpty else {
            for problem in problems { self.logger.error("\(problem.description)") }
            self.logger.error("the rules in \(file) have \(problems.count) error(s); the rules in force are kept")
            return nil
        }
        self.watched.withLockedValue { $0 = files }
        return rules
    }

    /// New sessions get `rules`; counts of unchanged limit lines carry over.
    private func apply(_ rules: Rules, from file: String) {
        self.server.rules?.reload(rules)
        self.logger.info("reloaded the rules in \(file) for new sessions: \(RulesFile.summary(rules))")
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
        // All or nothing: the rules are read and the certificates loaded before anything is swapped.
        var rules: Rules?
        if let file = new.rules, self.server.rules != nil {
            rules = self.readRules(file)
            guard rules != nil else {
                self.logger.error("reload failed, the configuration in force is kept")
                return
            }
        }
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
        if let rules, let file = new.rules {
            self.apply(rules, from: file)
        } else if new.rules != nil {
            self.logger.warning("rules are configured now but were not at start: restart the gateway for them")
        } else if old.rules != nil {
            self.server.rules?.reload(Rules())
            self.logger.warning("the rules were taken out of the configuration: new sessions are not checked")
        }
        var kept: [String] = []
        if bound(new.listeners) != bound(old.listeners) { kept.append("listeners") }
        if new.reusePort != old.reusePort { kept.append("reuse-port") }
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
        applied.reusePort = old.reusePort
        applied.pcap = old.pcap
        applied.transcriptBodies = old.transcriptBodies
        applied.live = old.live
        applied.outputBuffer = old.outputBuffer
        if self.server.rules == nil { applied.rules = old.rules }
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

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
