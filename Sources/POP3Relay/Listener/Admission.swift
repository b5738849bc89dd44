import NIOCore

/// The step between accept and the session: it sees who connected, and decides before any upstream connection
/// is made. The rules plug in here (and the address a trusted PROXY header carries).
public protocol AdmissionPolicy: Sendable {
    func decide(client: SocketAddress?, listener: Endpoint) -> AdmissionDecision
}

/// Admits every client: what the gateway does until rules are configured.
public struct AdmitAll: AdmissionPolicy {
    public init() {}
    public func decide(client: SocketAddress?, listener: Endpoint) -> AdmissionDecision { .admit }
}
