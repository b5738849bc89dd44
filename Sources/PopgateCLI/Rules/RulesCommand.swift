import ArgumentParser
import POP3Rules

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension Popgate {
    struct RulesCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rules",
            abstract: "Check a rules file, or ask what it does to a client.",
            subcommands: [Check.self, Explain.self]
        )

        struct Check: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Report every error of a rules file with its line, column and a hint, or sum up its policy.",
                discussion: """
                    Exit codes: 0 for a valid file (its policy is printed), 1 when it has errors (each is printed).

                    Examples:
                      popgate rules check Rules/default.rules
                      popgate rules check /etc/popgate/gateway.rules && systemctl reload popgate
                    """
            )

            @Argument(help: "The rules file.", completion: .file())
            var file: String

            func run() throws {
                let rules = try RulesFile.loadOrReport(self.file, command: "check")
                print(Self.summary(rules, file: self.file))
            }

            static func summary(_ rules: Rules, file: String) -> String {
                var lines = ["\(file): valid"]
                for access in rules.access {
                    let what = access.addresses.map { "\($0.rangeCount) address range(s)" } ?? "any address"
                    let silently = access.silent ? ", closed without a reply" : ""
                    lines.append("  \(access.allow ? "allow" : "deny ") from \(what)\(silently)   (\(access.source))")
                }
                if !rules.access.isEmpty, rules.access.last?.addresses != nil {
                    lines.append("  otherwise: allow (no rule decides; end the file with deny from any to refuse)")
                }
                for limit in rules.limits {
                    let window = limit.window.map { "per \(Int($0)) s" } ?? "concurrent"
                    let key: String
                    switch limit.key {
                    case .user: key = "per user"
                    case .clientIP(let v6): key = "per client address (IPv6 by /\(v6))"
                    }
                    let block = limit.block.map { ", then blocked \(Int($0)) s" } ?? ""
                    lines.append(
                        "  at most \(limit.count) \(limit.kind.rawValue) \(window) \(key)\(block)   (\(limit.source))"
                    )
                }
                if !rules.tlsBefore.isEmpty {
                    lines.append("  TLS required before \(rules.tlsBefore.sorted().joined(separator: ", "))")
                }
                for denial in rules.commandDenials {
                    lines.append(
                        "  \(denial.command) refused\(denial.user.map { " for \($0)" } ?? "")   (\(denial.source))"
                    )
                }
                for denial in rules.deniedUsers {
                    lines.append("  user \(denial.pattern) refused   (\(denial.source))")
                }
                return lines.joined(separator: "\n")
            }
        }

        struct Explain: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Say what a rules file would do to a client, and which line decides each point.",
                discussion: """
                    Exit codes: 0 when the client would be admitted, 2 when it would be refused, 1 when the file has
                    errors.

                    Examples:
                      popgate rules explain Rules/default.rules --from 192.0.2.7
                      popgate rules explain gateway.rules --from 10.1.2.3 --user archive@example.org
                      popgate rules explain gateway.rules --from 2001:db8::7 --user alice --tls
                    """
            )

            @Argument(help: "The rules file.", completion: .file())
            var file: String

            @Option(help: "The client's address (IPv4 or IPv6).")
            var from: String

            @Option(help: "The user name it logs in as.")
            var user: String?

            @Flag(help: "The client uses TLS (the TLS port, or STLS).")
            var tls = false

            func validate() throws {
                guard RuleAddress(self.from) != nil else {
                    throw ValidationError("--from \(self.from) is not an IP address (as 192.0.2.7 or 2001:db8::7)")
                }
            }

            func run() throws {
                let rules = try RulesFile.loadOrReport(self.file, command: "explain")
                let explanation = rules.explain(address: RuleAddress(self.from)!, user: self.user, tls: self.tls)
                print(explanation.lines.joined(separator: "\n"))
                if !explanation.admitted { throw ExitCode(2) }
            }
        }
    }
}

/// Reads a rules file and what it includes, relative to the file's own directory.
enum RulesFile {
    /// The rules, their problems, and every file read for them (what a change to is a change to the rules).
    static func load(_ file: String) -> (rules: Rules, problems: [RulesProblem], files: [String]) {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            return (Rules(), [RulesProblem(file: file, line: 0, column: 0, message: "cannot read \(file)")], [file])
        }
        let directory = file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : ""
        var files = [file]
        let (rules, problems) = RulesParser.parse(text, file: file) { path in
            let resolved = path.hasPrefix("/") || directory.isEmpty ? path : directory + "/" + path
            files.append(resolved)
            guard let text = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw RulesProblem(file: path, line: 0, column: 0, message: "cannot be read")
            }
            return text
        }
        return (rules, problems, files)
    }

    /// One line for the log: how much there is of each kind.
    static func summary(_ rules: Rules) -> String {
        let ranges = rules.access.reduce(0) { $0 + ($1.addresses?.rangeCount ?? 1) }
        return "\(rules.access.count) access line(s) (\(ranges) address range(s)), \(rules.limits.count) limit(s), "
            + "TLS before \(rules.tlsBefore.count) command(s), \(rules.commandDenials.count) command denial(s), "
            + "\(rules.deniedUsers.count) user denial(s)"
    }

    /// The rules, or every problem printed and exit 1.
    static func loadOrReport(_ file: String, command: String) throws -> Rules {
        let (rules, problems, _) = Self.load(file)
        if let first = problems.first, first.line == 0 {
            Terminal.shared.error("popgate rules \(command): \(first.message)")
            throw ExitCode(1)
        }
        guard problems.isEmpty else {
            for problem in problems { Terminal.shared.error(problem.description) }
            Terminal.shared.error("\(problems.count) error\(problems.count == 1 ? "" : "s") in \(file)")
            throw ExitCode(1)
        }
        return rules
    }
}
