import ArgumentParser

public struct Popgate: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "popgate")
    public init() {}
    public func run() async throws {}
}
