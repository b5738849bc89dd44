/// A rules file, parsed: what `popgate serve --rules` enforces, in the order the file says it.
public struct Rules: Sendable, Hashable {
    /// Where a rule was written, for log lines and `rules explain`.
    public struct Source: Sendable, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var description: String { "\(self.file):\(self.line)" }
    }

    public struct Access: Sendable, Hashable {
        public var allow: Bool
        /// Nil for `any`.
        public var addresses: AddressSet?
        public var source: Source
        /// `deny from ... silently`: the connection is closed without a reply.
        public var silent = false
    }

    public enum Key: Sendable, Hashable {
        /// The client's address; IPv6 clients grouped by this prefix length (64 unless the file says otherwise).
        case clientIP(v6Prefix: Int)
        case user
    }

    public struct Limit: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable {
            case connections
            case sessions
            case authFailures = "auth-failures"
        }
        public var kind: Kind
        public var count: Int
        /// Seconds; nil for `concurrent`.
        public var window: Double?
        public var key: Key
        /// `then block DURATION`, seconds.
        public var block: Double?
        public var source: Source
    }

    public struct CommandDenial: Sendable, Hashable {
        public var command: String
        /// `for user PATTERN`: `*` matches any run of characters.
        public var user: String?
        public var source: Source
    }

    public var access: [Access] = []
    public var limits: [Limit] = []
    /// `require tls before`: the commands refused before TLS.
    public var tlsBefore: Set<String> = []
    public var commandDenials: [CommandDenial] = []
    /// `deny user PATTERN`.
    public var deniedUsers: [UserDenial] = []

    public struct UserDenial: Sendable, Hashable {
        public var pattern: String
        public var source: Source
    }

    public init() {}
}

/// One error in a rules file: where, what, and what to write instead.
public struct RulesProblem: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String
    public var hint: String?

    public init(file: String, line: Int, column: Int, message: String, hint: String? = nil) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint
    }

    public var description: String {
        "\(self.file):\(self.line):\(self.column): \(self.message)" + (self.hint.map { "\n  hint: \($0)" } ?? "")
    }
}

/// Reads the rules language, a line at a time, top to bottom. Every error is reported (not only the first),
/// each with its line and column. `read` gives the text of an included file, or of a prefix list.
public enum RulesParser {
    public static func parse(
        _ text: String,
        file: String,
        read: ((String) throws -> String)? = nil
    ) -> (rules: Rules, problems: [RulesProblem]) {
        var rules = Rules()
        var problems: [RulesProblem] = []
        var including = Includes(open: [file], read: [file])
        let reader: (String) throws -> String = { path in
            guard let read else { throw RulesProblem(file: path, line: 0, column: 0, message: "no files here") }
            return try read(path)
        }
        self.parse(text, file: file, read: reader, into: &rules, problems: &problems, including: &including)
        return (rules, problems)
    }

    static let commands: Set<String> = [
        "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL",
        "CAPA", "STLS", "UTF8", "LANG", "LAST",
    ]

    private struct Word {
        var text: String
        var column: Int
    }

    /// The files being read (a loop when one comes again) and every file read so far.
    struct Includes {
        var open: Set<String>
        var read: Set<String>
    }

    private static func parse(
        _ text: String,
        file: String,
        read: (String) throws -> String,
        into rules: inout Rules,
        problems: inout [RulesProblem],
        including: inout Includes
    ) {
        for (index, rawLine) in text.lines.enumerated() {
            let number = index + 1
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = Self.words(line)
            guard let first = words.first else { continue }
            let source = Rules.Source(file: file, line: number)
            func problem(_ word: Word?, _ message: String, _ hint: String? = nil) {
                problems.append(
                    RulesProblem(
                        file: file,
                        line: number,
                        column: word?.column ?? (line.count + 1),
                        message: message,
                        hint: hint
                    )
                )
            }
            let second = words.count > 1 ? words[1].text.lowercased() : ""
            switch first.text.lowercased() {
            case "allow" where second == "from", "deny" where second == "from":
                let allow = first.text.lowercased() == "allow"
                var items = Array(words.dropFirst(2))
                var silent = false
                if let last = items.last, last.text.lowercased() == "silently" {
                    items.removeLast()
                    if allow {
                        problem(last, "only a deny closes silently", "deny from 192.0.2.0/24 silently")
                    } else {
                        silent = true
                    }
                }
                guard !items.isEmpty else {
                    problem(nil, "\(first.text) from needs addresses", "allow from 10.0.0.0/8, 2001:db8::/32 (or any)")
                    continue
                }
                if items.count == 1, items[0].text.lowercased() == "any" {
                    rules.access.append(.init(allow: allow, addresses: nil, source: source, silent: silent))
                    continue
                }
                var prefixes: [RulePrefix] = []
                var position = 0
                while position < items.count {
                    let item = items[position]
                    position += 1
                    if item.text.lowercased() == "file" {
                        guard position < items.count else {
                            problem(nil, "file needs a path", "allow from file /etc/popgate/office.txt")
                            break
                        }
                        let path = items[position]
                        position += 1
                        do {
                            let list = try read(path.text)
                            for (offset, entry) in list.lines.enumerated() {
                                let trimmed =
                                    entry.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first
                                    .map { $0.trimmingSpaces } ?? ""
                                guard !trimmed.isEmpty else { continue }
                                do { prefixes.append(try RulePrefix(parsing: trimmed)) } catch {
                                    problems.append(
                                        RulesProblem(file: path.text, line: offset + 1, column: 1, message: "\(error)")
                                    )
                                }
                            }
                        } catch {
                            problem(path, "cannot read the prefix list \(path.text)")
                        }
                        continue
                    }
                    if item.text.lowercased() == "any" {
                        problem(item, "any stands alone", "\(first.text) from any")
                        continue
                    }
                    do { prefixes.append(try RulePrefix(parsing: item.text)) } catch {
                        problem(item, "\(error)", "a prefix is ADDRESS/LENGTH, as 192.0.2.0/24 or 2001:db8::/32")
                    }
                }
                rules.access.append(
                    .init(allow: allow, addresses: AddressSet(prefixes), source: source, silent: silent)
                )
            case "deny" where second == "command":
                guard words.count >= 3 else {
                    problem(nil, "deny command needs a command", "deny command DELE")
                    continue
                }
                let command = words[2].text.uppercased()
                guard Self.commands.contains(command) else {
                    problem(
                        words[2],
                        "\(words[2].text) is not a POP3 command",
                        "one of \(Self.commands.sorted().joined(separator: ", "))"
                    )
                    continue
                }
                var user: String?
                if words.count > 3 {
                    guard words.count == 6, words[3].text.lowercased() == "for", words[4].text.lowercased() == "user"
                    else {
                        problem(words[3], "expected for user PATTERN", "deny command DELE for user archive@example.org")
                        continue
                    }
                    user = words[5].text
                }
                rules.commandDenials.append(.init(command: command, user: user, source: source))
            case "deny" where second == "user":
                guard words.count == 3 else {
                    problem(
                        words.count > 3 ? words[3] : nil,
                        "deny user takes one pattern",
                        "deny user *@old.example.org"
                    )
                    continue
                }
                rules.deniedUsers.append(.init(pattern: words[2].text, source: source))
            case "allow", "deny":
                problem(
                    words.count > 1 ? words[1] : nil,
                    "\(first.text) what?",
                    "\(first.text) from ADDRESSES, deny command CMD, deny user PATTERN"
                )
            case "require":
                guard words.count >= 4, words[1].text.lowercased() == "tls", words[2].text.lowercased() == "before"
                else {
                    problem(
                        words.count > 1 ? words[1] : nil,
                        "expected require tls before COMMANDS",
                        "require tls before USER, PASS, APOP, AUTH"
                    )
                    continue
                }
                for word in words.dropFirst(3) {
                    let command = word.text.uppercased()
                    if Self.commands.contains(command) {
                        rules.tlsBefore.insert(command)
                    } else {
                        problem(word, "\(word.text) is not a POP3 command")
                    }
                }
            case "limit":
                if let limit = Self.limit(words, source: source, problem: problem) { rules.limits.append(limit) }
            case "include":
                guard words.count == 2 else {
                    problem(words.count > 2 ? words[2] : nil, "include takes one file", "include Rules/office.rules")
                    continue
                }
                let path = words[1].text
                guard !including.open.contains(path) else {
                    problem(words[1], "\(path) includes itself, through this line")
                    continue
                }
                // A file read once is in the rules already (a second copy would only repeat it, and files that
                // include each other would be read once per path through them: exponentially many times).
                guard including.read.insert(path).inserted else { continue }
                including.open.insert(path)
                do {
                    let text = try read(path)
                    Self.parse(text, file: path, read: read, into: &rules, problems: &problems, including: &including)
                } catch {
                    problem(words[1], "cannot read \(path)")
                }
                including.open.remove(path)
            case "route":
                problem(
                    first,
                    "route is not supported yet",
                    "routing users to upstreams comes with a later release; use one listener per upstream"
                )
            default:
                problem(first, "unknown rule \(first.text)", "allow, deny, limit, require, include")
            }
        }
    }

    /// `limit connections N per DURATION per client-ip[/LEN]`, `limit sessions N concurrent per client-ip`,
    /// `limit auth-failures N per DURATION per client-ip|user then block DURATION`.
    private static func limit(
        _ words: [Word],
        source: Rules.Source,
        problem: (Word?, String, String?) -> Void
    ) -> Rules.Limit? {
        let examples = [
            "connections": "limit connections 30 per minute per client-ip",
            "sessions": "limit sessions 5 concurrent per client-ip",
            "auth-failures": "limit auth-failures 5 per 10 minutes per client-ip then block 15 minutes",
        ]
        guard words.count > 1, let kind = Rules.Limit.Kind(rawValue: words[1].text.lowercased()) else {
            problem(words.count > 1 ? words[1] : nil, "limit what?", "connections, sessions or auth-failures")
            return nil
        }
        let example = examples[kind.rawValue]
        guard words.count > 2, let count = Int(words[2].text), count >= 1 else {
            problem(words.count > 2 ? words[2] : nil, "expected a count of at least 1", example)
            return nil
        }
        var position = 3
        var window: Double?
        if kind == .sessions {
            guard words.count > position, words[position].text.lowercased() == "concurrent" else {
                problem(words.count > position ? words[position] : nil, "expected concurrent", example)
                return nil
            }
            position += 1
        } else {
            guard words.count > position, words[position].text.lowercased() == "per",
                let (seconds, used) = Self.duration(Array(words[(position + 1)...]))
            else {
                problem(
                    words.count > position + 1 ? words[position + 1] : nil,
                    "expected per DURATION, of a year at most",
                    example
                )
                return nil
            }
            window = seconds
            position += 1 + used
        }
        guard words.count > position + 1, words[position].text.lowercased() == "per" else {
            problem(words.count > position ? words[position] : nil, "expected per client-ip or per user", example)
            return nil
        }
        let keyWord = words[position + 1]
        position += 2
        let key: Rules.Key
        let keyText = keyWord.text.lowercased()
        if keyText == "user", kind == .authFailures {
            key = .user
        } else if keyText == "client-ip" {
            key = .clientIP(v6Prefix: 64)
        } else if keyText.hasPrefix("client-ip/"), let length = Int(keyText.dropFirst(10)), (1...128).contains(length) {
            key = .clientIP(v6Prefix: length)
        } else {
            problem(keyWord, "expected client-ip\(kind == .authFailures ? " or user" : "")", example)
            return nil
        }
        var block: Double?
        if kind == .authFailures {
            guard words.count > position + 2, words[position].text.lowercased() == "then",
                words[position + 1].text.lowercased() == "block",
                let (seconds, used) = Self.duration(Array(words[(position + 2)...]))
            else {
                problem(
                    words.count > position ? words[position] : nil,
                    "expected then block DURATION, of a year at most",
                    example
                )
                return nil
            }
            block = seconds
            position += 2 + used
        }
        if position < words.count {
            problem(words[position], "unexpected \(words[position].text)", example)
            return nil
        }
        return Rules.Limit(kind: kind, count: count, window: window, key: key, block: block, source: source)
    }

    /// `minute`, `10 minutes`, `30 seconds`, `1 hour`, `2 days` (a year at most): seconds, and the words it took.
    private static func duration(_ words: [Word]) -> (Double, Int)? {
        guard let first = words.first else { return nil }
        let units: [String: Double] = ["second": 1, "minute": 60, "hour": 3600, "day": 86_400]
        func unit(_ text: String) -> Double? {
            let lower = text.lowercased()
            return units[lower] ?? (lower.hasSuffix("s") ? units[String(lower.dropLast())] : nil)
        }
        if let seconds = unit(first.text) { return (seconds, 1) }
        // At most a year: "1e300 days" or "inf days" stopped whatever printed the rule (explain, the log).
        guard let count = Double(first.text), count > 0, words.count > 1, let seconds = unit(words[1].text),
            count * seconds <= 365 * 86_400
        else {
            return nil
        }
        return (count * seconds, 2)
    }

    /// The line's words with their columns (1-based); commas separate as spaces do.
    private static func words(_ line: Substring) -> [Word] {
        var words: [Word] = []
        var current = ""
        var start = 0
        for (offset, character) in line.enumerated() {
            if character == " " || character == "\t" || character == "," || character == "\r" {
                if !current.isEmpty { words.append(Word(text: current, column: start + 1)) }
                current = ""
            } else {
                if current.isEmpty { start = offset }
                current.append(character)
            }
        }
        if !current.isEmpty { words.append(Word(text: current, column: start + 1)) }
        return words
    }
}

extension String {
    /// The lines, at LF or CRLF. Swift reads CRLF as one character, so a split at "\n" left a file written
    /// on Windows as one line: its rules refused, and a prefix list starting with a comment read as empty.
    fileprivate var lines: [Substring] {
        self.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        guard let start = self.firstIndex(where: { $0 != " " && $0 != "\t" }),
            let end = self.lastIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" })
        else { return "" }
        return String(self[start...end])
    }
}
