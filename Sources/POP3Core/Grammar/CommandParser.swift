/// A client line read as a command: what was recognised, the line as transcripts show it, and what is wrong with it.
public struct ParsedCommand: Sendable, Hashable {
    /// The command, or nil when the keyword is known but its arguments are malformed.
    public var command: Command?
    /// The keyword in upper case (`RETR`), or as sent when it is unknown.
    public var keyword: String
    /// The line as sent, without its line ending, with any credential masked.
    public var text: String
    /// Where the credential stands in the line (octet offsets), so an export can mask it keeping the length.
    public var secretRange: Range<Int>?
    /// Syntax problems, each with its rule (R2, R3, R10, R19, R20, R26, R40).
    public var issues: [Anomaly]
}

/// Parses one command line (RFC 1939 §3, RFC 2449 §3 `keyword = 3*4VCHAR`, `param = 1*VCHAR`).
public enum CommandParser {
    static let sp: UInt8 = 0x20

    /// Parses `line`, which holds no line ending. `utf8Allowed` is true once UTF8 was accepted (R10).
    public static func parse(_ line: some Collection<UInt8>, utf8Allowed: Bool = false) -> ParsedCommand {
        // Read in place where the octets are contiguous (a ByteBuffer's are): a command is parsed on every line.
        if let parsed = line.withContiguousStorageIfAvailable({ Self.parse(octets: $0, utf8Allowed: utf8Allowed) }) {
            return parsed
        }
        return Array(line).withUnsafeBufferPointer { Self.parse(octets: $0, utf8Allowed: utf8Allowed) }
    }

    static func parse(octets bytes: UnsafeBufferPointer<UInt8>, utf8Allowed: Bool) -> ParsedCommand {
        var issues: [Anomaly] = []
        if let masked = Self.credentialWithoutSpace(bytes) { return masked }

        let keywordEnd = bytes.firstIndex(of: sp) ?? bytes.endIndex
        let keywordBytes = bytes[..<keywordEnd]
        let rawKeyword = String(decoding: keywordBytes, as: UTF8.self)
        let keyword = Self.uppercased(keywordBytes) ?? rawKeyword.uppercased()
        let rest = bytes[(keywordEnd < bytes.endIndex ? keywordEnd + 1 : keywordEnd)...]

        if keywordBytes.count < 3 || keywordBytes.count > 4 || !keywordBytes.allSatisfy(isVisible) {
            issues.append(
                Anomaly(
                    .commandSyntax,
                    .client,
                    "a keyword is 3 or 4 printable characters; \"\(printable(rawKeyword))\" is not"
                )
            )
        }
        if !utf8Allowed && bytes.contains(where: { $0 >= 0x80 }) {
            issues.append(Anomaly(.eightBit, .client, "8-bit octets in a command before UTF8 was accepted"))
        }

        // PASS takes the rest of the line, spaces included (RFC 1939 §7).
        if keyword == "PASS" {
            let start = keywordEnd + 1
            guard start <= bytes.count, !rest.isEmpty else {
                issues.append(Anomaly(.arguments, .client, "a password must follow PASS"))
                return ParsedCommand(command: nil, keyword: keyword, text: rawKeyword, issues: issues)
            }
            let range = start..<bytes.count
            return ParsedCommand(
                command: .pass(Credential(rest)),
                keyword: keyword,
                text: rawKeyword + " " + Credential.mask,
                secretRange: range,
                issues: issues
            )
        }

        // The arguments in one pass: fields between single spaces; an empty one means a doubled, leading or
        // trailing space.
        var arguments: [String] = []
        if !rest.isEmpty {
            var emptyField = false
            var fieldStart = rest.startIndex
            var index = rest.startIndex
            while index < rest.endIndex {
                if rest[index] == sp {
                    if index == fieldStart {
                        emptyField = true
                    } else {
                        arguments.append(String(decoding: rest[fieldStart..<index], as: UTF8.self))
                    }
                    fieldStart = index + 1
                }
                index += 1
            }
            if fieldStart == rest.endIndex {
                emptyField = true
            } else {
                arguments.append(String(decoding: rest[fieldStart...], as: UTF8.self))
            }
            if emptyField {
                issues.append(Anomaly(.commandSyntax, .client, "arguments are separated by a single space"))
            }
        }
        // Control characters are shown escaped, so a transcript line is one line and shows what was sent. They are
        // ASCII, so the octets tell whether the decoded text has any.
        let text =
            bytes.allSatisfy({ $0 >= 0x20 && $0 != 0x7F })
            ? String(decoding: bytes, as: UTF8.self)
            : printable(String(decoding: bytes, as: UTF8.self), limit: Int.max)

        func malformed(_ reason: String) -> ParsedCommand {
            issues.append(Anomaly(.arguments, .client, reason))
            return ParsedCommand(command: nil, keyword: keyword, text: text, issues: issues)
        }
        func argumentLengths(_ args: ArraySlice<String>) {
            if let long = args.first(where: { $0.utf8.count > POP3Defaults.argumentLimit }) {
                issues.append(
                    Anomaly(
                        .commandLength,
                        .client,
                        "an argument is at most \(POP3Defaults.argumentLimit) characters; one has \(long.utf8.count)"
                    )
                )
            }
        }

        switch keyword {
        case "STAT", "NOOP", "RSET", "QUIT", "CAPA", "STLS", "UTF8":
            guard arguments.isEmpty else { return malformed("\(keyword) takes no arguments") }
            let command: Command =
                switch keyword {
                case "STAT": .stat
                case "NOOP": .noop
                case "RSET": .rset
                case "QUIT": .quit
                case "CAPA": .capa
                case "STLS": .stls
                default: .utf8
                }
            return ParsedCommand(command: command, keyword: keyword, text: text, issues: issues)

        case "RETR", "DELE":
            guard arguments.count == 1, let n = messageNumber(arguments[0]) else {
                return malformed("\(keyword) takes exactly one message number of 1 or more")
            }
            let command: Command = keyword == "RETR" ? .retr(n) : .dele(n)
            return ParsedCommand(command: command, keyword: keyword, text: text, issues: issues)

        case "LIST", "UIDL":
            guard arguments.count <= 1 else { return malformed("\(keyword) takes at most one message number") }
            var n: Int?
            if let a = arguments.first {
                guard let parsed = messageNumber(a) else {
                    return malformed("\(keyword) takes a message number of 1 or more")
                }
                n = parsed
            }
            let command: Command = keyword == "LIST" ? .list(n) : .uidl(n)
            return ParsedCommand(command: command, keyword: keyword, text: text, issues: issues)

        case "TOP":
            guard arguments.count == 2, let n = messageNumber(arguments[0]), let lines = decimal(arguments[1]) else {
                return malformed("TOP takes a message number and a count of lines, both required")
            }
            return ParsedCommand(command: .top(message: n, lines: lines), keyword: keyword, text: text, issues: issues)

        case "USER":
            guard !arguments.isEmpty else { return malformed("USER needs a name") }
            argumentLengths(arguments[...])
            // Some servers accept names with spaces; keep the rest of the line as the name.
            let name = String(decoding: rest, as: UTF8.self)
            return ParsedCommand(command: .user(name), keyword: keyword, text: text, issues: issues)

        case "APOP":
            guard arguments.count == 2 else { return malformed("APOP takes a name and a digest") }
            argumentLengths(arguments[..<1])
            let digest = arguments[1]
            if digest.utf8.count != 32 || !digest.utf8.allSatisfy(isLowerHex) {
                issues.append(Anomaly(.apop, .client, "an APOP digest is 32 lower-case hex characters"))
            }
            let digestStart = bytes.count - digest.utf8.count
            return ParsedCommand(
                command: .apop(name: arguments[0], digest: Credential(digest)),
                keyword: keyword,
                text: rawKeyword + " " + arguments[0] + " " + Credential.mask,
                secretRange: digestStart..<bytes.count,
                issues: issues
            )

        case "AUTH":
            guard arguments.count <= 2 else {
                return malformed("AUTH takes a mechanism and an optional initial response")
            }
            if arguments.isEmpty {
                return ParsedCommand(
                    command: .auth(mechanism: nil, initialResponse: nil),
                    keyword: keyword,
                    text: text,
                    issues: issues
                )
            }
            let mechanism = arguments[0].uppercased()
            // RFC 4422 §3.1: 1 to 20 upper-case letters, digits, "-" or "_". Anything else may be a secret
            // sent by a client that is not speaking POP3, so it is masked.
            guard mechanism.utf8.count <= 20, mechanism.utf8.allSatisfy(isMechanismCharacter) else {
                issues.append(Anomaly(.authCommand, .client, "AUTH names a SASL mechanism; this argument is not one"))
                return ParsedCommand(
                    command: nil,
                    keyword: keyword,
                    text: rawKeyword + " " + Credential.mask,
                    secretRange: (keywordEnd + 1)..<bytes.count,
                    issues: issues
                )
            }
            guard arguments.count == 2 else {
                return ParsedCommand(
                    command: .auth(mechanism: mechanism, initialResponse: nil),
                    keyword: keyword,
                    text: text,
                    issues: issues
                )
            }
            if bytes.count + 2 > POP3Defaults.commandLineLimit {
                issues.append(
                    Anomaly(
                        .saslInitialResponse,
                        .client,
                        "an initial response that makes AUTH longer than 255 octets must be left out"
                    )
                )
            }
            let payload = arguments[1]
            let initial = payload == "=" ? Credential([UInt8]()) : Credential(payload)
            let start = bytes.count - payload.utf8.count
            return ParsedCommand(
                command: .auth(mechanism: mechanism, initialResponse: initial),
                keyword: keyword,
                text: rawKeyword + " " + arguments[0] + " " + (payload == "=" ? "=" : Credential.mask),
                secretRange: payload == "=" ? nil : start..<bytes.count,
                issues: issues
            )

        case "LANG":
            guard arguments.count <= 1 else { return malformed("LANG takes at most one language tag") }
            return ParsedCommand(command: .lang(arguments.first), keyword: keyword, text: text, issues: issues)

        default:
            if Command.obsoleteKeywords.contains(keyword) {
                issues.append(Anomaly(.obsoleteCommand, .client, "\(keyword) is not part of RFC 1939"))
                return ParsedCommand(
                    command: .other(keyword: keyword, arguments: arguments),
                    keyword: keyword,
                    text: text,
                    issues: issues
                )
            }
            return ParsedCommand(
                command: .other(keyword: rawKeyword, arguments: arguments),
                keyword: rawKeyword,
                text: text,
                issues: issues
            )
        }
    }

    /// Keywords whose lines carry a secret after the keyword (RFC 1939 §7, RFC 5034 §4).
    static let credentialKeywords: Set<String> = ["PASS", "APOP", "AUTH"]

    /// A PASS, APOP or AUTH line whose keyword is not followed by a space (a tab, `:`, a vertical tab, a
    /// non-breaking space, or nothing): not a command, but a server may still read a password in it, so
    /// everything after the keyword is a secret, whether or not the line parses.
    static func credentialWithoutSpace(_ bytes: UnsafeBufferPointer<UInt8>) -> ParsedCommand? {
        guard bytes.count > 4, bytes[4] != sp else { return nil }
        let keyword = Self.uppercased(bytes[..<4]) ?? String(decoding: bytes[..<4], as: UTF8.self).uppercased()
        guard Self.credentialKeywords.contains(keyword) else { return nil }
        let byte = bytes[4]
        let separator =
            byte < 0x20 || byte >= 0x7F
            ? "0x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            : "\"" + String(UnicodeScalar(byte)) + "\""
        return ParsedCommand(
            command: nil,
            keyword: keyword,
            text: String(decoding: bytes[..<4], as: UTF8.self) + " " + Credential.mask,
            secretRange: 4..<bytes.count,
            issues: [
                Anomaly(
                    .commandSyntax,
                    .client,
                    "\(keyword) is followed by \(separator), not a space; what follows it is masked as a secret"
                )
            ]
        )
    }

    /// An ASCII keyword in upper case, made without Unicode's case mapping; nil when it is not ASCII.
    static func uppercased(_ keyword: Slice<UnsafeBufferPointer<UInt8>>) -> String? {
        guard keyword.allSatisfy({ $0 < 0x80 }) else { return nil }
        return String(unsafeUninitializedCapacity: keyword.count) { buffer in
            var offset = 0
            for byte in keyword {
                buffer[offset] = byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte
                offset += 1
            }
            return offset
        }
    }

    /// A decimal message number of 1 or more (R20).
    static func messageNumber(_ text: String) -> Int? { Self.messageNumber(text.utf8) }

    /// The same, read from octets.
    static func messageNumber(_ digits: some Collection<UInt8>) -> Int? {
        guard let n = decimal(digits), n >= 1 else { return nil }
        return n
    }

    /// A non-negative decimal number that fits 32 bits; no sign, no spaces.
    static func decimal(_ text: String) -> Int? { Self.decimal(text.utf8) }

    /// The same, read from octets.
    static func decimal(_ digits: some Collection<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.count <= 10 else { return nil }
        var n = 0
        for digit in digits {
            guard digit >= 0x30 && digit <= 0x39 else { return nil }
            n = n * 10 + Int(digit - 0x30)
        }
        return n <= Int(Int32.max) ? n : nil
    }

    /// How many fields `text` has between spaces, and the first two, as octets: a reply's or a listing line's
    /// numbers are read from them without making a string or an array. `keepingEmpty`: a doubled space makes an
    /// empty field.
    static func fields(_ text: String, keepingEmpty: Bool = false) -> Fields {
        let utf8 = text.utf8
        var fields = Fields(count: 0, first: utf8.prefix(0), second: utf8.prefix(0))
        var start = utf8.startIndex
        var index = utf8.startIndex
        while true {
            let atEnd = index == utf8.endIndex
            if atEnd || utf8[index] == sp {
                if keepingEmpty || start < index {
                    if fields.count == 0 {
                        fields.first = utf8[start..<index]
                    } else if fields.count == 1 {
                        fields.second = utf8[start..<index]
                    }
                    fields.count += 1
                }
                if atEnd { break }
                start = utf8.index(after: index)
            }
            utf8.formIndex(after: &index)
        }
        return fields
    }

    /// What ``fields(_:keepingEmpty:)`` found.
    struct Fields {
        var count: Int
        var first: Substring.UTF8View
        var second: Substring.UTF8View
    }

    static func isMechanismCharacter(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x5F
    }
    static func isVisible(_ byte: UInt8) -> Bool { byte > 0x20 && byte < 0x7F }
    static func isLowerHex(_ byte: UInt8) -> Bool { (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x66) }

    /// Text safe to put in one line of a transcript: tab, CR and LF as `\t`, `\r`, `\n`, other control
    /// characters as `\xNN`, capped in length.
    static func printable(_ text: String, limit: Int = 60) -> String {
        // The usual line has no control characters and fits: it is its own printable form.
        if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }), limit == Int.max || text.utf8.count <= limit {
            return text
        }
        var out = ""
        for scalar in text.unicodeScalars.prefix(limit) {
            if scalar.value == 0x09 {
                out += "\\t"
            } else if scalar.value == 0x0D {
                out += "\\r"
            } else if scalar.value == 0x0A {
                out += "\\n"
            } else if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return limit < Int.max && text.unicodeScalars.count > limit ? out + "…" : out
    }
}
