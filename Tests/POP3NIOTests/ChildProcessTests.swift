import NIOCore
import NIOPosix
import PopgateTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The tests' children (popgate, Dovecot, curl, python) get none of the test process's descriptors. NIO's sockets
/// are not close-on-exec; a child holding a copy of a test's client socket kept that connection open after the
/// test closed it, and in the parallel suite gateways and servers never heard their clients leave.
@Suite("Children of the tests")
struct ChildProcessTests {
    @Test("a child started while NIO sockets are open holds only its standard descriptors")
    func noInheritedDescriptors() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: listener.localAddress!).get()
        // `ls` lists its own descriptors: 0, 1, 2 and the one it reads the directory with.
        let (status, output) = try runProgram("ls", ["/proc/self/fd"])
        #expect(status == 0)
        let descriptors = String(decoding: output, as: UTF8.self).split(separator: "\n").compactMap { Int($0) }
        #expect(descriptors.filter { $0 > 3 }.isEmpty, "the child holds \(descriptors)")
        try await client.close()
        try await listener.close()
    }

    @Test("runTool returns a program's output and fails on its exit status")
    func runToolStatus() async throws {
        #expect(try await runTool("printf", ["a%sb", "-"]) == "a-b")
        await #expect(throws: ChildProcess.Failure.self) { try await runTool("false", []) }
        await #expect(throws: ChildProcess.Failure.self) { try await runTool("no-such-program-popgate", []) }
    }
}
