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

/// At capacity, a client is told so (`-ERR [SYS/TEMP]`) before any upstream connection is made; below it,
/// `next` decides.
struct CapacityLimit: AdmissionPolicy {
    let next: any AdmissionPolicy
    let registry: SessionRegistry
    let maximum: Int

    func decide(client: SocketAddress?, listener: Endpoint) -> AdmissionDecision {
        // The registry counts this session already.
        guard self.registry.count <= self.maximum else {
            return .busy(reason: "the gateway is at capacity (\(self.maximum) sessions); try again later")
        }
        return self.next.decide(client: client, listener: listener)
    }
}
