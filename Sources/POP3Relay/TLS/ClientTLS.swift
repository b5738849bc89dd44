import NIOCore
import NIOSSL
import POP3Core

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The gateway's end of TLS with clients: its certificate and key, read and checked once, as one NIOSSL
/// context that every session's handler shares.
public struct ClientTLS: Sendable {
    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    let context: NIOSSLContext
    public let certificatePath: String
    /// When the certificate stops being valid, in seconds since 1970.
    public let notValidAfter: Int

    /// Reads `certificate` (a PEM chain, the gateway's own first) and `key` (PEM, or DER: the format is read
    /// from the file, never guessed from its name). A missing or unreadable file, a certificate out of its
    /// validity, or a key that is not the certificate's is a ``Problem`` naming the file.
    public static func load(
        certificate: String,
        key: String,
        named: [RelayConfiguration.NamedCertificate] = [],
        strictNames: Bool = false,
        minimum: RelayConfiguration.TLSFloor,
        now: Double = Date().timeIntervalSince1970
    ) throws -> ClientTLS {
        let (chain, privateKey, notValidAfter) = try Self.pair(certificate: certificate, key: key, now: now)
        // Certificates by the name a client asks for (SNI), each pair checked here, not in a client's handshake.
        var byName: [String: NIOSSLContextConfigurationOverride] = [:]
        for entry in named {
            let (namedChain, namedKey, _) = try Self.pair(certificate: entry.certificate, key: entry.key, now: now)
            _ = try Self.context(
                Self.configuration(namedChain, namedKey, minimum: minimum),
                keyPath: entry.key,
                certificatePath: entry.certificate
            )
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = namedChain.map { .certificate($0) }
            override.privateKey = .privateKey(namedKey)
            for name in entry.names { byName[name.lowercased()] = override }
        }
        var configuration = Self.configuration(chain, privateKey, minimum: minimum)
        if !byName.isEmpty || strictNames {
            let names = byName
            configuration.sslContextCallback = { values, promise in
                guard let asked = values.serverHostname?.lowercased() else {
                    promise.succeed(.noChanges)
                    return
                }
                let wildcard = asked.split(separator: ".", maxSplits: 1).dropFirst().first.map { "*." + $0 }
                if let override = names[asked] ?? wildcard.flatMap({ names[$0] }) {
                    promise.succeed(override)
                } else if strictNames {
                    promise.fail(Problem(description: "no certificate for the server name \(asked)"))
                } else {
                    promise.succeed(.noChanges)
                }
            }
        }
        let context = try Self.context(configuration, keyPath: key, certificatePath: certificate)
        return ClientTLS(context: context, certificatePath: certificate, notValidAfter: notValidAfter)
    }

    private static func configuration(
        _ chain: [NIOSSLCertificate],
        _ key: NIOSSLPrivateKey,
        minimum: RelayConfiguration.TLSFloor
    ) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = minimum.version
        // A client that does not answer close_notify does not hold its session's end record for long.
        configuration.shutdownTimeout = .seconds(2)
        return configuration
    }

    private static func context(
        _ configuration: TLSConfiguration,
        keyPath: String,
        certificatePath: String
    ) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw Problem(
                description: "\(keyPath): the key does not belong to the certificate in \(certificatePath) (\(error))"
            )
        }
    }

    /// A certificate chain and its key, read and checked (validity now; the format of the key from its content).
    private static func pair(
        certificate: String,
        key: String,
        now: Double
    ) throws -> ([NIOSSLCertificate], NIOSSLPrivateKey, Int) {
        let certificateBytes = try Self.read(certificate, "certificate")
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(certificateBytes)
        } catch {
            throw Problem(description: "\(certificate): not a PEM certificate chain (\(error))")
        }
        guard let leaf = chain.first else { throw Problem(description: "\(certificate): holds no certificate") }
        if Double(leaf.notValidAfter) < now {
            throw Problem(
                description: "\(certificate): the certificate expired on \(Self.day(Int(leaf.notValidAfter)))"
            )
        }
        if Double(leaf.notValidBefore) > now {
            throw Problem(
                description: "\(certificate): the certificate is not valid before \(Self.day(Int(leaf.notValidBefore)))"
            )
        }
        let keyBytes = try Self.read(key, "key")
        let pem = String(decoding: keyBytes.prefix(4096), as: UTF8.self).contains("-----BEGIN")
        do {
            return (chain, try NIOSSLPrivateKey(bytes: keyBytes, format: pem ? .pem : .der), Int(leaf.notValidAfter))
        } catch {
            throw Problem(description: "\(key): not a \(pem ? "PEM" : "DER") private key (\(error))")
        }
    }

    /// Whole days until the certificate expires.
    public func daysLeft(now: Double = Date().timeIntervalSince1970) -> Int {
        Int((Double(self.notValidAfter) - now) / 86_400)
    }

    /// A new handler for one client connection.
    func handler() -> NIOSSLServerHandler { NIOSSLServerHandler(context: self.context) }

    private static func read(_ path: String, _ what: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist"
            throw Problem(description: "\(path): the \(what) file \(reason)")
        }
        return Array(data)
    }

    private static func day(_ time: Int) -> String {
        String(TranscriptRecord.timestamp(Double(time)).prefix(10))
    }
}

extension RelayConfiguration.TLSFloor {
    var version: TLSVersion {
        switch self {
        case .tls10: .tlsv1
        case .tls11: .tlsv11
        case .tls12: .tlsv12
        case .tls13: .tlsv13
        }
    }

    /// How NIOSSL's negotiated version reads in a transcript.
    static func name(_ version: TLSVersion?) -> String {
        switch version {
        case .tlsv1?: "TLS 1.0"
        case .tlsv11?: "TLS 1.1"
        case .tlsv12?: "TLS 1.2"
        case .tlsv13?: "TLS 1.3"
        case nil: "TLS"
        }
    }
}

/// Sits below the TLS handler and reads, without changing them, the first handshake message each way: the
/// client's ClientHello (the server name it asked for, the version and application protocols it offered) and
/// the gateway's ServerHello (the version and cipher suite chosen). NIOSSL has no accessor for the cipher suite,
/// and its ALPN callback cannot refuse a handshake: so the ClientHello is held here until it reads whole, and
/// `seen` may refuse it, which ends the handshake with a `no_application_protocol` alert (the ALPACA defence).
final class HelloTap: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The client's first octets, held until its hello reads whole (at most 16 KiB); nil once decided.
    private var inbound: ByteBuffer? = ByteBuffer()
    private var outbound: [UInt8]? = []
    /// Returns false to refuse the handshake.
    private let seen: (TLSHello) -> Bool

    init(seen: @escaping (TLSHello) -> Bool) { self.seen = seen }

    /// A fatal TLS alert, no_application_protocol (RFC 7301 §3.2), in a TLS 1.2 record.
    static let noApplicationProtocol: [UInt8] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x78]

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard var held = self.inbound else {
            context.fireChannelRead(data)
            return
        }
        var bytes = Self.unwrapInboundIn(data)
        held.writeBuffer(&bytes)
        switch TLSHello.parse(held.readableBytesView) {
        case .incomplete where held.readableBytes < TLSHello.probeLimit:
            self.inbound = held
            return
        case .hello(let hello) where hello.kind == .clientHello:
            self.inbound = nil
            guard self.seen(hello) else {
                let alert = context.channel.allocator.buffer(bytes: Self.noApplicationProtocol)
                context.writeAndFlush(Self.wrapOutboundOut(alert)).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
                return
            }
        default:
            self.inbound = nil
        }
        context.fireChannelRead(Self.wrapInboundOut(held))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if var octets = self.outbound {
            octets += Self.unwrapOutboundIn(data).readableBytesView.prefix(TLSHello.probeLimit - octets.count)
            switch TLSHello.parse(octets) {
            case .hello(let hello) where hello.kind == .serverHello:
                self.outbound = nil
                _ = self.seen(hello)
            case .hello:
                self.outbound = nil
            case .notTLS:
                self.outbound = nil
            case .incomplete:
                self.outbound = octets.count < TLSHello.probeLimit ? octets : nil
            }
        }
        context.write(data, promise: promise)
    }
}
