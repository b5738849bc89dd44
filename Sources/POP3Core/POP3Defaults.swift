/// Limits the conversation machine enforces, each with the rule that sets it.
public enum POP3Defaults {
    /// RFC 2449 §4: a command, including its CRLF, is at most 255 octets (R3).
    public static let commandLineLimit = 255
    /// RFC 1939 §3, RFC 2449 §4: the first line of a reply, including CRLF, is at most 512 octets (R5).
    public static let replyLineLimit = 512
    /// RFC 5034 §4: SASL lines are not bound by the 255-octet limit, but a bound keeps memory finite (R40).
    public static let saslLineLimit = 16_384
    /// RFC 1939 §3: each argument is at most 40 characters (R3).
    public static let argumentLimit = 40
    /// Zeek's threshold for unknown commands before a session stops looking like POP3 (R49).
    public static let unknownCommandLimit = 10
    /// Zeek's threshold for unanswered pipelined commands (R50).
    public static let pendingCommandLimit = 10
    /// Zorp's threshold for lines in one AUTH exchange (R51).
    public static let authLineLimit = 4
    /// A generous user-name cap (Zorp uses 32; addresses are often longer) (R52).
    public static let userNameLimit = 64
    /// A password cap (R52).
    public static let passwordLimit = 64
    /// RFC 1939 §3: an autologout timer, if present, is at least 10 minutes (R18).
    public static let minimumAutologoutSeconds = 600.0
    /// A server that closes sooner than this after the last line closes by choice (a failed login, R16), not by
    /// an autologout timer, so R18 is not reported.
    public static let shortestAutologoutSuspectSeconds = 30.0
    /// RFC 1939 §7 and RFC 2449 §6.8: a unique-id is 1 to 70 characters (R25).
    public static let uniqueIDLimit = 70
}
