// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "popgate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "popgate", targets: ["popgate"]),
        .library(name: "POP3Core", targets: ["POP3Core"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // The conversation machine and everything pure: grammar, framing, annotations, transcripts.
        .target(
            name: "POP3Core",
            dependencies: ["CPOP3Scan", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // Channel handlers shared by the embedded server, the relay and the demo.
        .target(
            name: "POP3NIO",
            dependencies: [
                "POP3Core",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The embedded POP3 server: the demo's and the fast tests' upstream.
        .target(
            name: "POP3Server",
            dependencies: [
                "POP3Core",
                "POP3NIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The gateway: listeners, upstream connections, the session glue, transcripts, shutdown.
        .target(
            name: "POP3Relay",
            dependencies: [
                "POP3Core",
                "POP3NIO",
                "POP3Rules",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // Each event goes through the executor's class and the machines inside it: their run-time exclusivity
            // checks cost about 0.3 % of a session's CPU. Debug builds (every test run) keep them.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // What is watched from outside: the live page, its JSON API and SSE stream, and the Prometheus metrics.
        .target(
            name: "POP3Live",
            dependencies: [
                "POP3Core",
                "POP3NIO",
                "POP3Relay",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // `popgate bench`: the POP3 load generator (a pure session machine, its NIO runner, the report).
        .target(
            name: "POP3Bench",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // The rules: addresses and prefixes, the policy language, decisions with time as a parameter. Pure.
        .target(name: "POP3Rules"),
        // libpcap, through pkg-config; Debian's libpcap-dev provides it.
        // The body scanner's vector loop: C, so that AVX2 can be chosen at run time.
        .target(name: "CPOP3Scan"),
        .systemLibrary(name: "CLibpcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"]), .brew(["libpcap"])]),
        // The capture reader: pcap/pcapng files and interfaces, link layers, IPv4/IPv6, TCP reassembly.
        .target(
            name: "POP3Capture",
            dependencies: ["CLibpcap", "CPOP3Scan", "POP3Core", .product(name: "NIOCore", package: "swift-nio")],
            // Every packet mutates the inspector's classes; their run-time exclusivity checks cost more than the
            // TCP reassembly itself. Debug builds (every test run) keep the checks.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // ArgumentParser commands, in a library so tests can call them without a process.
        .target(
            name: "PopgateCLI",
            dependencies: [
                "POP3Core",
                "POP3NIO",
                "POP3Server",
                "POP3Relay",
                "POP3Rules",
                "POP3Capture",
                "POP3Live",
                "POP3Bench",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "popgate",
            dependencies: ["PopgateCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "popgate-machine-bench",
            dependencies: [
                "POP3Core", "POP3Rules", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/popgate-machine-bench"
        ),
        .executableTarget(
            name: "popgate-relay-bench",
            dependencies: [
                "POP3Bench",
                "POP3NIO",
                "POP3Server",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/popgate-relay-bench"
        ),
        .executableTarget(
            name: "nio-glue-relay",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/nio-glue-relay"
        ),
        .executableTarget(
            name: "popgate-inspect-bench",
            dependencies: [
                "POP3Core", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/popgate-inspect-bench"
        ),
        // libFuzzer targets (scripts/fuzz.sh): swift build -c release --product NAME --sanitize=fuzzer
        // --sanitize=address -Xswiftc -sanitize=fuzzer,address (swift-driver keeps only the last -sanitize flag);
        // fuzz-relay, whose @testable import needs it, -c debug -Xswiftc -O.
        .target(name: "FuzzDriver", path: "Fuzz/FuzzDriver"),
        .executableTarget(
            name: "fuzz-proxy-header",
            dependencies: ["POP3Core", "FuzzDriver"],
            path: "Fuzz/fuzz-proxy-header",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "fuzz-conversation",
            dependencies: ["POP3Core", "FuzzDriver", .product(name: "NIOCore", package: "swift-nio")],
            path: "Fuzz/fuzz-conversation",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "fuzz-relay",
            dependencies: ["POP3Relay", "POP3Core", "FuzzDriver", .product(name: "NIOCore", package: "swift-nio")],
            path: "Fuzz/fuzz-relay",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "fuzz-packets",
            dependencies: ["POP3Capture", "FuzzDriver"],
            path: "Fuzz/fuzz-packets",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "fuzz-config",
            // ConfigFile.swift is a link to the command's own file: built here without ArgumentParser, so that
            // `swift package generate-manual` does not take the fuzzer for a command to document.
            dependencies: [
                "POP3Core", "POP3Relay", "POP3Rules", "POP3Live", "FuzzDriver",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Fuzz/fuzz-config",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .executableTarget(
            name: "fuzz-rules",
            dependencies: ["POP3Rules", "FuzzDriver"],
            path: "Fuzz/fuzz-rules",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
        .testTarget(
            name: "POP3CoreTests",
            dependencies: [
                "POP3Core", "CPOP3Scan", "PopgateTestSupport", .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "POP3RulesTests", dependencies: ["POP3Rules"]),
        .testTarget(
            name: "POP3BenchTests",
            dependencies: ["POP3Bench", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(name: "POP3LiveTests", dependencies: ["POP3Live", "POP3Core", "POP3NIO", "POP3Relay"]),
        .testTarget(
            name: "POP3NIOTests",
            dependencies: [
                "PopgateTestSupport",
                "POP3Core",
                "POP3NIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "POP3ServerTests",
            dependencies: [
                "PopgateTestSupport",
                "POP3Core",
                "POP3NIO",
                "POP3Server",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // Real peers for the integration tests: Dovecot, child processes stopped by pid.
        .target(
            name: "PopgateTestSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/Support"
        ),
        .testTarget(
            name: "POP3CaptureTests",
            dependencies: [
                "PopgateTestSupport", "POP3Capture", "POP3Core", .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "POP3RelayTests",
            dependencies: [
                "PopgateTestSupport",
                "POP3Core",
                "POP3Rules",
                "POP3NIO",
                "POP3Relay",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "PopgateCLITests",
            dependencies: [
                "POP3Relay",
                "POP3Live",
                "PopgateTestSupport",
                "PopgateCLI", "POP3Core", "POP3Server", .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
