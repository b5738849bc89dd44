import ArgumentParser
import PopgateCLI

@main
extension Popgate {}
