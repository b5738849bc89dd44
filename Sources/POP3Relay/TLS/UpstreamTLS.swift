import NIOCore
import NIOSSL

/// The gateway's side of TLS with one upstream: verification on unless turned off on purpose, against the
/// given CA file or the system's, for the upstream's name; one NIOSSL context its connections share.
struct UpstreamTLS: Sendable {
    let context: NIOSSLContext
    /// Sent as SNI and checked in the certificate; nil for an IP literal upstream without verification.
    let serverName: String?
    /// TLS from the first octet; otherwise STLS after the greeting.
    let implicit: Bool

    static func load(_ listener: RelayConfiguration.Listener) throws -> UpstreamTLS? {
        guard listener.upstreamTLS != .none else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = listener.upstreamTLSMinimum.version
        if !listener.upstreamVerify {
            configuration.certificateVerification = .none
        } else if let ca = listener.upstreamCA {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                throw ClientTLS.Problem(description: "\(ca): not a PEM file of CA certificates (\(error))")
            }
        }
        let host = listener.upstream.host
        let literal = host.contains(":") || host.split(separator: ".").allSatisfy { Int($0) != nil }
        do {
            return UpstreamTLS(
                context: try NIOSSLContext(configuration: configuration),
                serverName: listener.upstreamServerName ?? (literal ? nil : host),
                implicit: listener.upstreamTLS == .implicit
            )
        } catch {
            throw ClientTLS.Problem(description: "TLS to the upstream \(listener.upstream): \(error)")
        }
    }

    func handler() throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(context: self.context, serverHostname: self.serverName)
    }
}
