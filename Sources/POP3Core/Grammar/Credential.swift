/// A secret taken from the wire: a password, an APOP digest or a SASL payload.
///
/// Its text forms are always masked, so it can travel inside commands and events without
/// leaking into transcripts, logs or error messages. Only `revealed` gives the value, for the
/// embedded server that has to check it.
public struct Credential: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What every text form of a credential shows.
    public static let mask = "********"

    private let value: [UInt8]

    public init(_ bytes: some Sequence<UInt8>) { self.value = Array(bytes) }
    public init(_ string: String) { self.value = Array(string.utf8) }

    /// The secret itself. Never print it.
    public var revealed: [UInt8] { self.value }
    public var revealedString: String { String(decoding: self.value, as: UTF8.self) }
    public var octets: Int { self.value.count }

    public var description: String { Self.mask }
    public var debugDescription: String { Self.mask }
}
