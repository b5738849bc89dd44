#if canImport(Glibc)
import Glibc
#endif

/// An IP address as the rules see it: IPv4, or IPv6. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is its IPv4.
public enum RuleAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt128)

    /// Parses an address in text; nil when it is not one.
    public init?(_ text: some StringProtocol) {
        let string = String(text)
        // The C library stops at a NUL: "192.0.2.1\0junk" is not an address.
        guard !string.utf8.contains(0) else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, string, &v4) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, string, &v6) == 1 else { return nil }
        let value = withUnsafeBytes(of: &v6) { bytes in bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) } }
        self = Self.unmapped(value)
    }

    /// An IPv6 address from its 16 octets in network order (`::ffff:0:0/96` is IPv4).
    public init(v6Octets octets: UnsafeRawBufferPointer) {
        self = Self.unmapped(octets.prefix(16).reduce(UInt128(0)) { $0 << 8 | UInt128($1) })
    }

    /// `::ffff:0:0/96` is IPv4.
    static func unmapped(_ value: UInt128) -> RuleAddress {
        value >> 32 == 0xFFFF ? .v4(UInt32(truncatingIfNeeded: value)) : .v6(value)
    }

    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
        case .v6(let value):
            var address = in6_addr()
            withUnsafeMutableBytes(of: &address) { bytes in
                for index in 0..<16 { bytes[index] = UInt8(truncatingIfNeeded: value >> UInt128(8 * (15 - index))) }
            }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// A prefix such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is its own /32 or /128.
public struct RulePrefix: Sendable, Hashable, CustomStringConvertible {
    public let address: RuleAddress
    public let length: Int

    public struct Problem: Error, Hashable, CustomStringConvertible {
        public var description: String
    }

    public init(parsing text: some StringProtocol) throws {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = RuleAddress(parts[0]) else {
            throw Problem(description: "\"\(parts[0])\" is not an IPv4 or IPv6 address")
        }
        let mappedText = parts[0].contains(":")
        let width: Int
        switch address {
        case .v4: width = mappedText ? 128 : 32
        case .v6: width = 128
        }
        var length = width
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...width).contains(given) else {
                throw Problem(description: "\"/\(parts[1])\" is not a prefix length from 0 to \(width)")
            }
            length = given
        }
        // A mapped prefix counts in IPv4 bits; one shorter than the mapping's /96 is not IPv4 only.
        if case .v4 = address, mappedText {
            guard length >= 96 else {
                throw Problem(description: "an IPv4-mapped prefix must be at least /96, \"/\(length)\" covers more")
            }
            length -= 96
        }
        self.address = address
        self.length = length
    }

    /// The lowest and highest address the prefix covers.
    var v4Range: ClosedRange<UInt32>? {
        guard case .v4(let value) = self.address else { return nil }
        let mask: UInt32 = self.length == 0 ? 0 : ~UInt32(0) << UInt32(32 - self.length)
        return (value & mask)...(value | ~mask)
    }

    var v6Range: ClosedRange<UInt128>? {
        guard case .v6(let value) = self.address else { return nil }
        let mask: UInt128 = self.length == 0 ? 0 : ~UInt128(0) << UInt128(128 - self.length)
        return (value & mask)...(value | ~mask)
    }

    public var description: String { "\(self.address)/\(self.length)" }
}

/// A set of prefixes, for `allow from` and `deny from`: sorted, merged ranges looked up by binary search, so a
/// list of tens of thousands of prefixes costs a few comparisons per lookup.
public struct AddressSet: Sendable, Hashable {
    private var v4: [ClosedRange<UInt32>] = []
    private var v6: [ClosedRange<UInt128>] = []

    public init(_ prefixes: [RulePrefix] = []) {
        self.v4 = Self.merged(prefixes.compactMap(\.v4Range), next: { $0 == .max ? nil : $0 + 1 })
        self.v6 = Self.merged(prefixes.compactMap(\.v6Range), next: { $0 == .max ? nil : $0 + 1 })
    }

    /// Ranges after merging overlapping and adjacent prefixes.
    public var rangeCount: Int { self.v4.count + self.v6.count }

    public func contains(_ address: RuleAddress) -> Bool {
        switch address {
        case .v4(let value): return Self.search(self.v4, value)
        case .v6(let value): return Self.search(self.v6, value)
        }
    }

    private static func search<T: Comparable>(_ ranges: [ClosedRange<T>], _ value: T) -> Bool {
        var low = 0
        var high = ranges.count
        while low < high {
            let middle = (low + high) / 2
            if ranges[middle].upperBound < value {
                low = middle + 1
            } else {
                high = middle
            }
        }
        return low < ranges.count && ranges[low].contains(value)
    }

    private static func merged<T: Comparable>(_ ranges: [ClosedRange<T>], next: (T) -> T?) -> [ClosedRange<T>] {
        var out: [ClosedRange<T>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            // Overlapping, or adjacent (the next range begins right after this one ends).
            if let last = out.last, next(last.upperBound).map({ range.lowerBound <= $0 }) ?? true {
                out[out.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                out.append(range)
            }
        }
        return out
    }
}
