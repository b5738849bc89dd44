import NIOCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One line of a JSON-lines transcript (schema version 1).
///
/// The relay, `inspect` and `capture` all write this schema; the README documents every field.
/// Fields that do not apply to a kind are left out.
public struct TranscriptRecord: Codable, Sendable, Hashable {
    public static let schemaVersion = 1

    public var v: Int = TranscriptRecord.schemaVersion
    public var session: String
    /// ISO 8601 with fractional seconds (capture time for captures).
    public var time: String
    /// `session-start`, `command`, `sasl`, `reply`, `body-line`, `body`, `state`, `note`, `anomaly`, `tls`,
    /// `session-end`.
    public var kind: String
    public var side: String?
    public var verb: String?
    public var status: String?
    public var code: String?
    public var multiline: Bool?
    public var octets: Int?
    public var lines: Int?
    public var stuffed: Int?
    public var complete: Bool?
    public var rule: String?
    public var reason: String?
    /// For `anomaly`: `violation`, `interop`, `security` or `note`.
    public var severity: String?
    public var state: String?
    public var text: String?
    public var note: String?
    public var client: String?
    public var server: String?
    /// For `session-start` in the relay's transcripts: the listening address the client came to.
    public var gateway: String?
    /// For `session-start`: the balancer the client came through (PROXY protocol).
    public var via: String?

    public init(session: String, time: String, kind: String) {
        self.session = session
        self.time = time
        self.kind = kind
    }

    /// The record as one line of JSON, keys sorted, as `JSONEncoder` with `.sortedKeys` and
    /// `.withoutEscapingSlashes` writes it (a test holds the two equal), without its cost per record.
    public func jsonLine() -> String {
        var buffer = ByteBuffer()
        self.writeJSONLine(into: &buffer)
        return String(buffer: buffer)
    }

    /// ``jsonLine()`` written into `out` (no newline): a transcript's records go to their file's buffer this
    /// way, with no string made for each.
    public func writeJSONLine(into out: inout ByteBuffer) {
        out.reserveCapacity(minimumWritableBytes: 192)
        out.writeInteger(UInt8(ascii: "{"))
        var first = true
        // Each key comes with its quotes and colon, one write.
        func key(_ quoted: StaticString) {
            if !first { out.writeInteger(UInt8(ascii: ",")) }
            first = false
            out.writeStaticString(quoted)
        }
        func string(_ quoted: StaticString, _ value: String?) {
            guard let value else { return }
            key(quoted)
            Self.writeQuoted(value, into: &out)
        }
        func int(_ quoted: StaticString, _ value: Int?) {
            guard let value else { return }
            key(quoted)
            out.writeString(String(value))
        }
        func bool(_ quoted: StaticString, _ value: Bool?) {
            guard let value else { return }
            key(quoted)
            out.writeStaticString(value ? "true" : "false")
        }
        string(#""client":"#, self.client)
        string(#""code":"#, self.code)
        bool(#""complete":"#, self.complete)
        string(#""gateway":"#, self.gateway)
        string(#""kind":"#, self.kind)
        int(#""lines":"#, self.lines)
        bool(#""multiline":"#, self.multiline)
        string(#""note":"#, self.note)
        int(#""octets":"#, self.octets)
        string(#""reason":"#, self.reason)
        string(#""rule":"#, self.rule)
        string(#""server":"#, self.server)
        string(#""session":"#, self.session)
        string(#""severity":"#, self.severity)
        string(#""side":"#, self.side)
        string(#""state":"#, self.state)
        string(#""status":"#, self.status)
        int(#""stuffed":"#, self.stuffed)
        string(#""text":"#, self.text)
        string(#""time":"#, self.time)
        int(#""v":"#, self.v)
        string(#""verb":"#, self.verb)
        string(#""via":"#, self.via)
        out.writeInteger(UInt8(ascii: "}"))
    }

    /// ``appendQuoted(_:to:)`` into a buffer; most values need no escape and are copied as they are.
    static func writeQuoted(_ value: String, into out: inout ByteBuffer) {
        var value = value
        let plain = value.withUTF8 { bytes in
            guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return false }
            out.writeInteger(UInt8(ascii: "\""))
            out.writeBytes(bytes)
            out.writeInteger(UInt8(ascii: "\""))
            return true
        }
        if plain { return }
        var quoted = ""
        Self.appendQuoted(value, to: &quoted)
        out.writeString(quoted)
    }

    /// JSON's string escapes: the quote, the backslash and control characters; nothing else.
    public static func appendQuoted(_ value: String, to out: inout String) {
        out += "\""
        var plain = true
        for byte in value.utf8 where byte < 0x20 || byte == 0x22 || byte == 0x5C {
            plain = false
            break
        }
        if plain {
            out += value
        } else {
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                default: out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    /// ISO 8601 with milliseconds, in UTC, from seconds since 1970.
    public static func timestamp(_ secondsSince1970: Double) -> String {
        // A capture's clock gone far wrong (a crafted pcapng timestamp, say) must not stop the reader: past some
        // 30 million years either way it is held there, and not a number is 1970.
        let scaled = (secondsSince1970 * 1000).rounded(.down)
        let millis = scaled.isNaN ? 0 : Int64(max(-1e18, min(1e18, scaled)))
        let (days, msOfDay) = millis.quotientAndRemainder(dividingBy: 86_400_000)
        let (d, ms) = msOfDay < 0 ? (days - 1, msOfDay + 86_400_000) : (days, msOfDay)
        // Howard Hinnant's civil_from_days.
        let z = d + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        guard (0...9999).contains(year) else {
            // Outside four digits (a capture's clock gone wrong): the slow way, which widens the year.
            func pad(_ n: Int64, _ width: Int) -> String {
                let s = String(n)
                return String(repeating: "0", count: max(0, width - s.count)) + s
            }
            return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(ms / 3_600_000, 2)):"
                + "\(pad(ms / 60000 % 60, 2)):\(pad(ms / 1000 % 60, 2)).\(pad(ms % 1000, 3))Z"
        }
        // Every transcript line has one: written into its 24 octets at once, not built from pieces.
        return String(unsafeUninitializedCapacity: 24) { out in
            func put(_ value: Int64, _ width: Int, at offset: Int) {
                var value = value
                for index in stride(from: offset + width - 1, through: offset, by: -1) {
                    out[index] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
            }
            put(year, 4, at: 0)
            out[4] = UInt8(ascii: "-")
            put(month, 2, at: 5)
            out[7] = UInt8(ascii: "-")
            put(day, 2, at: 8)
            out[10] = UInt8(ascii: "T")
            put(ms / 3_600_000, 2, at: 11)
            out[13] = UInt8(ascii: ":")
            put(ms / 60000 % 60, 2, at: 14)
            out[16] = UInt8(ascii: ":")
            put(ms / 1000 % 60, 2, at: 17)
            out[19] = UInt8(ascii: ".")
            put(ms % 1000, 3, at: 20)
            out[23] = UInt8(ascii: "Z")
            return 24
        }
    }
}
