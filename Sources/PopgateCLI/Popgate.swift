import ArgumentParser

/// The `popgate` command: subcommands for each job.
@available(macOS 10.15, *)
public struct Popgate: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "popgate",
        abstract: "A POP3 proxy and protocol inspector that explains every line.",
        discussion: """
            Every command and reply is read by one conversation machine, annotated with the RFC section \
            that defines it, and checked against the conformance rules R1…R54.

            Start with the demo:
              popgate demo --once          a scripted session against the embedded server, then exit
              popgate demo                 the same, then keep serving for telnet or curl until Ctrl-C
            """,
        version: "0.1.0",
        subcommands: [Serve.self, Inspect.self, Capture.self, Demo.self, RulesCommand.self, Bench.self]
    )

    public init() {}
}
