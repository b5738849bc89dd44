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
            abstract: "Check a rules file.",
            subcommands: [Check.self]
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
                guard let text = try? String(contentsOfFile: self.file, encoding: .utf8) else {
                    Terminal.shared.error("popgate rules check: cannot read \(self.file)")
                    throw ExitCode(1)
                }
                let directory = self.file.contains("/") ? String(self.file[..<self.file.lastIndex(of: "/")!]) : ""
                let (rules, problems) = RulesParser.parse(text, file: self.file) { path in
                    let resolved = path.hasPrefix("/") || directory.isEmpty ? path : directory + "/" + path
                    guard let text = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                        throw RulesProblem(file: path, line: 0, column: 0, message: "cannot be read")
                    }
                    return text
                }
                guard problems.isEmpty else {
                    for problem in problems { Terminal.shared.error(problem.description) }
                    Terminal.shared.error("\(problems.count) error\(problems.count == 1 ? "" : "s") in \(self.file)")
                    throw ExitCode(1)
                }
                print(Self.summary(rules, file: self.file))
            }

            static func summary(_ rules: Rules, file: String) -> String {
                var lines = ["\(file): valid"]
                for access in rules.access {
                    let what = access.addresses.map { "\($0.rangeCount) address range(s)" } ?? "any address"
                    lines.append("  \(access.allow ? "allow" : "deny ") from \(what)   (\(access.source))")
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
    }
}
