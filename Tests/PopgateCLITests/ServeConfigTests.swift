import ArgumentParser
import NIOCore
import POP3Live
import POP3Relay
import Testing

@testable import PopgateCLI

@Suite("popgate serve configuration")
struct ServeConfigTests {
    @Test(
        "endpoints: IPv4, IPv6, names and POP URLs",
        arguments: [
            ("127.0.0.1:1110", "127.0.0.1", 1110),
            ("[::1]:1110", "::1", 1110),
            ("mail.example.org:110", "mail.example.org", 110),
            ("pop://mail.example.org", "mail.example.org", 110),
            ("pop://alice;AUTH=*@mail.example.org:2110/", "mail.example.org", 2110),
        ]
    )
    func endpoints(_ text: String, _ host: String, _ port: Int) throws {
        let endpoint = try Endpoint(parsing: text)
        #expect(endpoint.host == host && endpoint.port == port)
    }

    @Test(
        "bad endpoints are refused with the reason",
        arguments: [
            "127.0.0.1", "[::1:110", "host:0", "host:99999", ":110", "2001:db8::1:110", "::1:110", "pop://::1",
            "mail.example.org\u{0}x:110", "mail example.org:110", "host\t:110",
        ]
    )
    func badEndpoints(_ text: String) {
        #expect(throws: Endpoint.ParseError.self) { try Endpoint(parsing: text) }
    }

    @Test("a YAML file sets listeners with their own upstreams, transcripts, pcap export and timeouts")
    func yaml() throws {
        var configuration = RelayConfiguration()
        try ConfigFile.apply(
            """
            listeners:
              - listen: [127.0.0.1:1110, "[::1]:1110"]
                upstream: 127.0.0.1:110
              - listen: 127.0.0.1:2110
                upstream: pop://legacy.example.org
            transcripts: /tmp/popgate-transcripts
            pcap: /tmp/popgate-pcap
            transcript-bodies: true
            live: true
            timeouts: { idle: 300, connect: 2.5, greeting: 5, quit-reply: 7, shutdown-grace: 1, shutdown-drain: 3 }
            command-line-limit: 512
            """,
            path: "popgate.yaml",
            to: &configuration
        )
        #expect(configuration.listeners.count == 2)
        #expect(configuration.listeners[0].listen.map(\.description) == ["127.0.0.1:1110", "[::1]:1110"])
        #expect(configuration.listeners[1].upstream == Endpoint(host: "legacy.example.org", port: 110))
        #expect(configuration.transcripts == "/tmp/popgate-transcripts")
        #expect(configuration.pcap == "/tmp/popgate-pcap")
        #expect(configuration.transcriptBodies && configuration.live)
        #expect(configuration.idleTimeout == .seconds(300))
        #expect(configuration.connectTimeout == .milliseconds(2500))
        #expect(configuration.shutdownGrace == .seconds(1))
        #expect(configuration.quitReplyTimeout == .seconds(7))
        #expect(configuration.shutdownDrain == .seconds(3))
        #expect(configuration.commandLineLimit == 512)
    }

    @Test(
        "a bad YAML file is refused with a message naming the key",
        arguments: [
            ("listen: 127.0.0.1:1110\n", "upstream: missing"),
            ("listeners:\n  - listen: 127.0.0.1:1\n    upstream: nowhere\n", "listeners[0].upstream:"),
            ("listeners:\n  - listen: [127.0.0.1:1, bad]\n    upstream: h:1\n", "listeners[0].listen[1]:"),
            ("timeouts: { idle: soon }\n", "timeouts.idle: expected a number of seconds"),
            ("timeouts: { nap: 3 }\n", "timeouts.nap: unknown"),
            ("live: yes please\n", "live: expected true or false"),
            ("pcap: [a, b]\n", "pcap: expected a directory"),
            ("pcap: \"\"\n", "pcap: expected a directory"),
            ("colour: red\n", "colour: unknown setting"),
            ("command-line-limit: 100\n", "command-line-limit: expected a number of octets from 255"),
            (
                "command-line-limit: 16385\n",
                "command-line-limit: expected a number of octets from 255 (RFC 2449 §4) to 16384"
            ),
            ("command-line-limit: 9223372036854775807\n", "command-line-limit: expected a number of octets from 255"),
            ("- just\n- a list\n", "expected a mapping"),
            ("listeners: [\n", "not valid YAML"),
            ("proxy-trusted: [10.0.0.0/33]\n", "proxy-trusted[0]:"),
            ("listen: 127.0.0.1:1\nupstream: h:1\nproxy-protocol: maybe\n", "proxy-protocol: expected true or false"),
            ("rules: [a]\n", "rules: expected a rules file"),
            // fuzz-config's finding: Yams.load stops the process on a key that is not a scalar.
            ("? [listen, upstream]\n: 127.0.0.1:1\n", "line 1: a key must be plain text"),
            ("listeners:\n  - ? { a: 1 }\n    : x\n", "line 2: a key must be plain text"),
            ("timeouts: { <<: [1] }\n", "<< merges mappings"),
            // fuzz-config's finding: Yams's base-60 integers overflow and trap; here they are text, refused.
            ("-755555555155555555:55\n", "expected a mapping"),
            ("max-connections: 1:1:1:1:1:1:1:1:1:1:1:1\n", "max-connections: expected a number of sessions"),
            ("timeouts: { idle: 99999999999999999999 }\n", "timeouts.idle: expected a number of seconds"),
            // fuzz-config's finding: seconds past Int64's nanoseconds trapped as they were converted.
            ("timeouts: { idle: 20333333333333330 }\n", "timeouts.idle: must be more than 0 seconds and at most"),
            ("timeouts: { connect: .inf }\n", "timeouts.connect: must be more than 0 seconds and at most"),
            ("timeouts: { line: 1e300 }\n", "timeouts.line: must be more than 0 seconds and at most"),
            ("timeouts: { login: .nan }\n", "timeouts.login: must be more than 0 seconds and at most"),
            ("timeouts: { greeting: 31536001 }\n", "timeouts.greeting: must be more than 0 seconds and at most"),
            ("timeouts: { greeting: 0 }\n", "timeouts.greeting: must be more than 0 seconds"),
        ]
    )
    func badYAML(_ text: String, _ message: String) {
        var configuration = RelayConfiguration()
        do {
            try ConfigFile.apply(text, path: "bad.yaml", to: &configuration)
            Issue.record("accepted: \(text)")
        } catch {
            #expect("\(error)".hasPrefix("bad.yaml: "))
            #expect("\(error)".contains(message), "\(error)")
        }
    }

    @Test("a file that made Yams stop the process is refused with a message (fuzz-config's input)")
    func fuzzFinding() {
        let text =
            "listeners:\n  - name: froont\n?   list :ne[12nt\n?  \u{E1} list :npstmeouts: {seq\u{86}ire-01, connect: 10 }\n"
            + "http: 127.0.0.1:8110\nrules: r.\u{92}\u{92}\u{92}\u{92}\u{92}\u{F5}"
        var configuration = RelayConfiguration()
        #expect(throws: ConfigFile.Problem.self) { try ConfigFile.apply(text, path: "fuzz.yaml", to: &configuration) }
    }

    @Test(
        "integers read as Yams reads them, without its base-60 overflow",
        arguments: [
            ("5000", 5000), ("5_000", 5000), ("+12", 12), ("-3", -3), ("0x10", 16), ("0o17", 15), ("017", 15),
            ("0b101", 5),
            ("0", 0),
        ]
    )
    func integers(_ text: String, _ value: Int) {
        #expect(ConfigFile.integer(text) == value)
    }

    @Test(
        "base-60 and too-large integers are not numbers",
        arguments: ["1:30", "-755555555155555555:55", "99999999999999999999", "0x", "-", "0x-5", "--5", "+-1"]
    )
    func notIntegers(_ text: String) {
        #expect(ConfigFile.integer(text) == nil)
    }

    @Test("a number setting still takes a plain integer")
    func plainInteger() throws {
        var configuration = RelayConfiguration()
        try ConfigFile.apply("max-connections: 0x100\n", path: "ok.yaml", to: &configuration)
        #expect(configuration.maxConnections == 256)
    }

    @Test("merge keys and anchors: shared listener settings are written once")
    func mergeKeys() throws {
        var configuration = RelayConfiguration()
        try ConfigFile.apply(
            """
            listeners:
              - &first { upstream: 127.0.0.1:110, listen: 127.0.0.1:1110, name: shared }
              - { <<: *first, listen: 127.0.0.1:2110, name: second }
            """,
            path: "merge.yaml",
            to: &configuration
        )
        #expect(configuration.listeners.map(\.upstream.port) == [110, 110])
        #expect(configuration.listeners.map { $0.listen.first?.port } == [1110, 2110])
        #expect(configuration.listeners.map(\.name) == ["shared", "second"])
    }

    @Test("flags add a listener on top of the file; missing pieces are explained")
    func flags() throws {
        let serve = try #require(
            try Popgate.parseAsRoot([
                "serve", "--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--upstream", "h:110", "--idle-timeout",
                "30",
            ])
                as? Popgate.Serve
        )
        let configuration = try serve.relayConfiguration()
        #expect(configuration.listeners.first?.listen.count == 2)
        #expect(configuration.idleTimeout == .seconds(30))
        // A year is the longest; past what fits in nanoseconds it stopped the process as it was read.
        for (value, accepted) in [("31536000", true), ("31536001", false), ("1e30", false), ("inf", false)] {
            let serve = try #require(
                try Popgate.parseAsRoot([
                    "serve", "--listen", "127.0.0.1:0", "--upstream", "h:110", "--idle-timeout", value,
                ])
                    as? Popgate.Serve
            )
            if accepted {
                #expect(try serve.relayConfiguration().idleTimeout == .seconds(31_536_000))
            } else {
                #expect(throws: ConfigFile.Problem.self) { try serve.relayConfiguration() }
            }
        }
        let noUpstream = try #require(try Popgate.parseAsRoot(["serve", "--listen", "127.0.0.1:0"]) as? Popgate.Serve)
        #expect(throws: ConfigFile.Problem.self) { try noUpstream.relayConfiguration() }
        let nothing = try #require(try Popgate.parseAsRoot(["serve"]) as? Popgate.Serve)
        #expect(throws: ConfigFile.Problem.self) { try nothing.relayConfiguration() }
    }

    @Test("the PROXY protocol and the rules from the file and from flags; PROXY without trusted balancers is refused")
    func proxyAndRules() throws {
        var configuration = RelayConfiguration()
        try ConfigFile.apply(
            """
            listeners:
              - listen: 127.0.0.1:1110
                proxy-protocol: true
                upstream: 127.0.0.1:110
            proxy-trusted: [10.0.0.10, "2001:db8::/64"]
            rules: Rules/default.rules
            timeouts: { proxy-header: 2 }
            """,
            path: "p.yaml",
            to: &configuration
        )
        #expect(configuration.listeners[0].proxyProtocol)
        #expect(configuration.proxyTrusted.rangeCount == 2)
        #expect(configuration.rules == "Rules/default.rules")
        #expect(configuration.proxyHeaderTimeout == .seconds(2))
        let untrusted = try #require(
            try Popgate.parseAsRoot(["serve", "--listen", "127.0.0.1:0", "--upstream", "h:110", "--proxy-protocol"])
                as? Popgate.Serve
        )
        #expect { try untrusted.relayConfiguration() } throws: { "\($0)".contains("needs --proxy-trusted") }
        let trusted = try #require(
            try Popgate.parseAsRoot([
                "serve", "--listen", "127.0.0.1:0", "--upstream", "h:110", "--proxy-protocol", "--proxy-trusted",
                "10.0.0.10", "--proxy-header-timeout", "3", "--rules", "x.rules",
            ]) as? Popgate.Serve
        )
        let flags = try trusted.relayConfiguration()
        #expect(flags.listeners[0].proxyProtocol && flags.proxyTrusted.rangeCount == 1)
        #expect(flags.proxyHeaderTimeout == .seconds(3) && flags.rules == "x.rules")
        let bad = try #require(
            try Popgate.parseAsRoot(["serve", "--listen", "127.0.0.1:0", "--upstream", "h:110", "--proxy-trusted", "x"])
                as? Popgate.Serve
        )
        #expect { try bad.relayConfiguration() } throws: { "\($0)".contains("--proxy-trusted x") }
    }
}

@Suite("popgate serve --http configuration")
struct HTTPConfigTests {
    @Test("http:, http-token: and a listener's name: are read; a bare port is loopback")
    func keys() throws {
        var configuration = RelayConfiguration()
        try ConfigFile.apply(
            """
            listeners:
              - name: front-door
                listen: 127.0.0.1:1110
                upstream: 127.0.0.1:110
            http: "[::1]:8110"
            http-token: t0ken-abc
            """,
            path: "c.yaml",
            to: &configuration
        )
        #expect(configuration.listeners.first?.name == "front-door")
        #expect(configuration.http == Endpoint(host: "::1", port: 8110))
        #expect(configuration.httpToken == "t0ken-abc")
        #expect(try LiveHTTP.endpoint(parsing: "8110") == Endpoint(host: "127.0.0.1", port: 8110))
    }

    @Test(
        "a token that a cookie or a header would garble, or a short one, is refused",
        arguments: ["short", "has space 123", "semi;colon-123"]
    )
    func badToken(_ token: String) {
        #expect(LiveHTTP.tokenProblem(token) != nil)
        #expect(LiveHTTP.tokenProblem("Zm9vYmFyYmF6LTEyMw") == nil)
    }

    @Test(
        "a listener name that would not make a clean label is refused, naming the key",
        arguments: ["a b", "x/y", ""]
    )
    func badName(_ name: String) {
        var configuration = RelayConfiguration()
        #expect {
            try ConfigFile.apply(
                "listeners:\n  - name: \"\(name)\"\n    listen: 127.0.0.1:1110\n    upstream: 127.0.0.1:110\n",
                path: "c.yaml",
                to: &configuration
            )
        } throws: { error in
            "\(error)".contains("listeners[0].name")
        }
    }
}
