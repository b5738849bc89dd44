/// The maildrop as the session reveals it (RFC 1939 §5): sizes from STAT and LIST, marks from DELE and RSET,
/// unique ids from UIDL.
public struct MaildropModel: Sendable, Hashable {
    /// Messages in the maildrop, from STAT (deleted ones excluded, as STAT counts them).
    public internal(set) var count: Int?
    /// Octets in the maildrop, from STAT.
    public internal(set) var octets: Int?
    public internal(set) var sizes: [Int: Int] = [:]
    public internal(set) var uniqueIDs: [Int: String] = [:]
    public internal(set) var deleted: Set<Int> = []

    public init() {}

    public func isDeleted(_ message: Int) -> Bool { self.deleted.contains(message) }
}
