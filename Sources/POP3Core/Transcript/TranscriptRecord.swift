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
    public var state: String?
    public var text: String?
    public var note: String?
    public var client: String?
    public var server: String?

    public init(session: String, time: String, kind: String) {
        self.session = session
        self.time = time
        self.kind = kind
    }

    /// The record as one line of JSON, keys in a stable order.
    public func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// ISO 8601 with milliseconds, in UTC, from seconds since 1970.
    public static func timestamp(_ secondsSince1970: Double) -> String {
        let millis = Int64((secondsSince1970 * 1000).rounded(.down))
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
        func pad(_ n: Int64, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(ms / 3_600_000, 2)):\(pad(ms / 60000 % 60, 2)):"
            + "\(pad(ms / 1000 % 60, 2)).\(pad(ms % 1000, 3))Z"
    }
}
