import Testing

@testable import POP3Rules

@Suite("Rules: addresses and prefix sets")
struct AddressSetTests {
    func set(_ prefixes: String...) throws -> AddressSet {
        AddressSet(try prefixes.map { try RulePrefix(parsing: $0) })
    }

    func address(_ text: String) -> RuleAddress { RuleAddress(text)! }

    @Test("/0, /32 and /128 cover everything of their family, one address, one address")
    func edges() throws {
        let all4 = try self.set("0.0.0.0/0")
        #expect(all4.contains(self.address("0.0.0.0")) && all4.contains(self.address("255.255.255.255")))
        #expect(!all4.contains(self.address("::1")))
        let all6 = try self.set("::/0")
        #expect(
            all6.contains(self.address("::")) && all6.contains(self.address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        )
        let one = try self.set("192.0.2.7/32", "2001:db8::7/128", "198.51.100.9")
        #expect(one.contains(self.address("192.0.2.7")) && !one.contains(self.address("192.0.2.8")))
        #expect(!one.contains(self.address("192.0.2.6")))
        #expect(one.contains(self.address("2001:db8::7")) && !one.contains(self.address("2001:db8::8")))
        #expect(one.contains(self.address("198.51.100.9")))
    }

    @Test("an IPv4-mapped IPv6 address is its IPv4, in addresses and in prefixes")
    func mapped() throws {
        #expect(self.address("::ffff:10.1.2.3") == self.address("10.1.2.3"))
        let tens = try self.set("10.0.0.0/8")
        #expect(tens.contains(self.address("::ffff:10.200.0.1")))
        let mappedPrefix = try self.set("::ffff:192.168.0.0/112")
        #expect(
            mappedPrefix.contains(self.address("192.168.44.1")) && !mappedPrefix.contains(self.address("192.169.0.1"))
        )
        #expect(throws: RulePrefix.Problem.self) { try RulePrefix(parsing: "::ffff:0.0.0.0/64") }
    }

    @Test("prefix boundaries, overlaps and adjacent prefixes merge into the same set")
    func merging() throws {
        let s = try self.set("10.0.0.0/9", "10.128.0.0/9", "10.64.0.0/10", "172.16.0.0/12", "fe80::/10", "fe80::/64")
        #expect(s.rangeCount == 3)
        #expect(s.contains(self.address("10.255.255.255")) && !s.contains(self.address("11.0.0.0")))
        #expect(!s.contains(self.address("9.255.255.255")))
        #expect(s.contains(self.address("172.31.255.255")) && !s.contains(self.address("172.32.0.0")))
        #expect(s.contains(self.address("febf::1")) && !s.contains(self.address("fec0::")))
    }

    @Test("bad prefixes say what is wrong")
    func problems() {
        for (text, message) in [
            ("10.0.0.0/33", "\"/33\" is not a prefix length from 0 to 32"),
            ("2001:db8::/129", "\"/129\" is not a prefix length from 0 to 128"),
            ("10.0.0.256", "\"10.0.0.256\" is not an IPv4 or IPv6 address"),
            ("mail.example.org/24", "\"mail.example.org\" is not an IPv4 or IPv6 address"),
            ("10.0.0.0/x", "\"/x\" is not a prefix length from 0 to 32"),
        ] {
            #expect(throws: RulePrefix.Problem(description: message)) { try RulePrefix(parsing: text) }
        }
    }

    @Test("addresses print back in their usual form")
    func printing() {
        #expect(self.address("192.0.2.1").description == "192.0.2.1")
        #expect(self.address("2001:0db8:0000::0001").description == "2001:db8::1")
        for text in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.20.199.200"] {
            #expect(self.address(text).description == text)
        }
    }

    @Test("text with a NUL is not an address, though the C library would read up to it")
    func nul() {
        #expect(RuleAddress("192.0.2.1\u{0}junk") == nil && RuleAddress("2001:db8::1\u{0}") == nil)
        #expect(throws: RulePrefix.Problem.self) { try RulePrefix(parsing: "10.0.0.0\u{0}x/8") }
    }

    @Test("an address from its 16 octets: IPv4-mapped is IPv4, the rest IPv6")
    func fromOctets() {
        let mapped: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 7]
        #expect(mapped.withUnsafeBytes { RuleAddress(v6Octets: $0) } == self.address("192.0.2.7"))
        let v6: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + Array(repeating: 0, count: 11) + [1]
        #expect(v6.withUnsafeBytes { RuleAddress(v6Octets: $0) } == self.address("2001:db8::1"))
    }

    @Test("a set of 10,000 random prefixes answers like a scan of them, for random addresses")
    func againstAScan() throws {
        var generator = SystemRandomNumberGenerator()
        var prefixes: [RulePrefix] = []
        for _ in 0..<10_000 {
            let value = UInt32.random(in: 0...UInt32.max, using: &generator)
            let length = Int.random(in: 8...32, using: &generator)
            prefixes.append(try RulePrefix(parsing: "\(RuleAddress.v4(value))/\(length)"))
        }
        let set = AddressSet(prefixes)
        let ranges = prefixes.compactMap(\.v4Range)
        for _ in 0..<2_000 {
            let value = UInt32.random(in: 0...UInt32.max, using: &generator)
            #expect(set.contains(.v4(value)) == ranges.contains { $0.contains(value) })
        }
    }
}
