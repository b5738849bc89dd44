import Foundation

/// Certificates made at test time with openssl: one for localhost and 127.0.0.1 valid for 30 days, one that
/// expires within the week, one long expired, a key that is none of theirs, and the key in DER.
public struct TestCertificates: Sendable {
    public let directory: String
    public var certificate: String { self.directory + "/cert.pem" }
    public var key: String { self.directory + "/key.pem" }
    public var keyDER: String { self.directory + "/key.der" }
    public var expiringSoon: String { self.directory + "/soon.pem" }
    public var expired: String { self.directory + "/expired.pem" }
    public var otherKey: String { self.directory + "/other.pem" }

    public static func make() async throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("popgate-certs-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let made = TestCertificates(directory: directory)
        let config = """
            [ca]
            default_ca = here
            [here]
            database = \(directory)/index.txt
            new_certs_dir = \(directory)
            serial = \(directory)/serial
            default_md = sha256
            policy = anything
            [anything]
            commonName = supplied
            """
        try config.write(toFile: directory + "/ca.cnf", atomically: true, encoding: .utf8)
        try "".write(toFile: directory + "/index.txt", atomically: true, encoding: .utf8)
        try "01\n".write(toFile: directory + "/serial", atomically: true, encoding: .utf8)
        let script = """
            set -e; cd '\(directory)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 30 -subj /CN=localhost \
              -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
            openssl req -x509 -key key.pem -out soon.pem -days 6 -subj /CN=localhost 2>/dev/null
            openssl pkey -in key.pem -outform DER -out key.der
            openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.pem 2>/dev/null
            openssl req -new -key key.pem -subj /CN=localhost -out req.csr
            openssl ca -batch -config ca.cnf -selfsign -keyfile key.pem -in req.csr -out expired.pem \
              -startdate 20200101000000Z -enddate 20200102000000Z 2>/dev/null
            """
        _ = try await runTool("sh", ["-c", script])
        return made
    }

    /// A certificate for `name` (its CN and its one DNS name), with the same key; its path.
    public func named(_ name: String) async throws -> String {
        let file = self.directory + "/" + name.replacingOccurrences(of: "*", with: "star") + ".pem"
        _ = try await runTool(
            "sh",
            [
                "-c",
                "openssl req -x509 -key '\(self.key)' -out '\(file)' -days 30 -subj '/CN=\(name)' -addext 'subjectAltName=DNS:\(name)' 2>/dev/null",
            ]
        )
        return file
    }

    public func remove() { try? FileManager.default.removeItem(atPath: self.directory) }
}

/// Runs a shell command and returns everything it printed (both streams), whatever its exit status.
public func runShell(_ command: String) async throws -> String {
    try await runTool("sh", ["-c", "(\(command)) 2>&1; true"])
}
