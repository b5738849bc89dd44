import Crypto

/// APOP's digest (RFC 1939 §7): MD5 of the greeting's timestamp followed by the shared secret, in lower-case hex.
public enum APOP {
    public static func digest(timestamp: String, secret: String) -> String {
        Insecure.MD5.hash(data: Array((timestamp + secret).utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
