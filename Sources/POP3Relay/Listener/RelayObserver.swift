/// What the relay reports beside the conversation, for metrics: how long connections took, how handshakes went,
/// which rules refused. Called on the session's event loop; an implementation must not block.
///
/// The conversation itself (commands, replies, anomalies, how a session ended) reaches watchers as a
/// ``ConversationSink``; this is only what the conversation does not hold.
public protocol RelayObserver: Sendable {
    /// The upstream's TCP connection was made, `seconds` after it was asked for.
    func upstreamConnected(listener: String, seconds: Double)
    /// A TLS handshake ended: with the client (`upstream` false) or with the upstream.
    func tlsHandshake(listener: String, upstream: Bool, succeeded: Bool)
    /// The gateway refused a client before relaying it: by a rules line (`file:line`), or `admission`,
    /// `capacity` for its own limits.
    func refused(listener: String, rule: String)
}

/// The name a listener goes by where addresses must not appear: its configured name, else its place.
extension RelayConfiguration.Listener {
    public func displayName(index: Int) -> String { self.name ?? "listener\(index + 1)" }
}
