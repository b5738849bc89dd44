import Hummingbird
import Logging
import NIOCore
import POP3Relay
import ServiceLifecycle

/// The one HTTP listener: the live page, `/api/sessions`, the SSE stream, `/metrics`, `/healthz`, `/readyz`.
///
/// A Hummingbird `Application`, run as a service in the caller's ServiceGroup (so popgate's own signal handling
/// stays the only one). Its page and scripts are compiled in: nothing is fetched from anywhere else, and its
/// Content-Security-Policy says so to the browser too.
public struct LiveHTTP: Service {
    public struct Settings: Sendable {
        public var endpoint: Endpoint
        /// When set, everything but the health checks wants `Authorization: Bearer TOKEN`, or `?token=TOKEN` (the
        /// page's address), after which a cookie carries it for the page's own requests.
        public var token: String?
        /// What the page calls this view: `gateway` or `capture`.
        public var mode: String

        public init(endpoint: Endpoint, token: String? = nil, mode: String = "gateway") {
            self.endpoint = endpoint
            self.token = token
            self.mode = mode
        }
    }

    private let settings: Settings
    private let board: LiveBoard
    private let metrics: GatewayMetrics?
    private let readiness: @Sendable () async -> String?
    private let logger: Logger
    private let bound: @Sendable (SocketAddress?) -> Void

    /// - Parameters:
    ///   - readiness: nil when ready, else why not (for `/readyz`).
    ///   - bound: told the address once listening (the real port when 0 was asked for).
    public init(
        settings: Settings,
        board: LiveBoard,
        metrics: GatewayMetrics?,
        readiness: @escaping @Sendable () async -> String? = { nil },
        logger: Logger,
        bound: @escaping @Sendable (SocketAddress?) -> Void = { _ in }
    ) {
        self.settings = settings
        self.board = board
        self.metrics = metrics
        self.readiness = readiness
        self.logger = logger
        self.bound = bound
    }

    public func run() async throws {
        let board = self.board
        let app = Application(
            router: Self.router(settings: self.settings, board: board, metrics: self.metrics, ready: self.readiness),
            configuration: ApplicationConfiguration(
                address: .hostname(self.settings.endpoint.host, port: self.settings.endpoint.port),
                serverName: "popgate"
            ),
            onServerRunning: { [bound = self.bound, logger = self.logger, mode = self.settings.mode] channel in
                bound(channel.localAddress)
                let address = channel.localAddress.map { Self.url($0) } ?? "?"
                logger.info("the live page of this \(mode) is on \(address)")
            },
            logger: self.logger
        )
        // Streams to open pages end at shutdown, or the server would wait for them.
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await app.run() }
            group.addTask {
                try? await gracefulShutdown()
                board.finishViewers()
            }
        }
    }

    public static func url(_ address: SocketAddress) -> String {
        let host = address.ipAddress ?? "?"
        let shown = host.contains(":") ? "[\(host)]" : host
        return "http://\(shown):\(address.port ?? 0)/"
    }

    static func router(
        settings: Settings,
        board: LiveBoard,
        metrics: GatewayMetrics?,
        ready: @escaping @Sendable () async -> String?
    ) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: BearerToken(token: settings.token))
        router.get("/") { _, _ in Self.asset(LivePage.html, type: "text/html; charset=utf-8") }
        router.get("/app.js") { _, _ in Self.asset(LivePage.script, type: "text/javascript; charset=utf-8") }
        router.get("/app.css") { _, _ in Self.asset(LivePage.style, type: "text/css; charset=utf-8") }
        router.get("/api/sessions") { _, _ in
            let items = board.summaries().map(\.json).joined(separator: ",")
            return Self.json("{\"mode\":\"\(settings.mode)\",\"sessions\":[\(items)]}")
        }
        router.get("/api/sessions/:id") { _, context in
            guard let id = context.parameters.get("id"), let found = board.transcript(id) else {
                return Self.json("{\"error\":\"no such session\"}", status: .notFound)
            }
            return Self.json(
                "{\"session\":\(found.summary.json),\"dropped\":\(found.dropped),\"records\":["
                    + found.records.joined(separator: ",") + "]}"
            )
        }
        router.get("/api/stream") { request, _ in
            let follow = request.uri.queryParameters.get("follow").map { String($0) }
            let (stream, missed) = board.subscribe(follow: follow)
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            return Response(
                status: .ok,
                headers: headers,
                body: ResponseBody { writer in
                    var reported = 0
                    try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                    for await message in stream {
                        try await writer.write(ByteBuffer(string: message.wire))
                        let lost = missed()
                        if lost > reported {
                            reported = lost
                            try await writer.write(ByteBuffer(string: "event: missed\ndata: {\"missed\":\(lost)}\n\n"))
                        }
                    }
                    try await writer.finish(nil)
                }
            )
        }
        router.get("/metrics") { _, _ in
            guard let metrics else { return Self.text("no metrics in this mode\n", status: .notFound) }
            return Self.text(metrics.exposition(), type: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/healthz") { _, _ in Self.text("ok\n") }
        router.get("/readyz") { _, _ in
            if let why = await ready() { return Self.text("not ready: \(why)\n", status: .serviceUnavailable) }
            return Self.text("ready\n")
        }
        return router
    }

    static func asset(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        // Everything from here and nowhere else; no inline script, so no line of a session can become one.
        headers[.contentSecurityPolicy] =
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        Self.text(text, status: status, type: "application/json")
    }

    static func text(
        _ text: String,
        status: HTTPResponse.Status = .ok,
        type: String = "text/plain; charset=utf-8"
    ) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-store"
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}

/// With a token, every request but the health checks carries it: `Authorization: Bearer TOKEN` (scripts,
/// Prometheus), `token=TOKEN` in the query (the page's address), or the cookie that the query sets (the page's
/// scripts and its EventSource, which cannot set headers). Compared in constant time.
struct BearerToken: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String?

    func handle(
        _ request: Request,
        context: Context,
        next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let token, request.uri.path != "/healthz", request.uri.path != "/readyz" else {
            return try await next(request, context)
        }
        let query = request.uri.queryParameters.get("token").map { String($0) }
        let offered =
            request.headers[.authorization].flatMap { value -> String? in
                value.hasPrefix("Bearer ") ? String(value.dropFirst(7)) : nil
            } ?? query ?? Self.cookie(request.headers[.cookie])
        guard let offered, Self.same(offered, token) else {
            var headers = HTTPFields()
            headers[.wwwAuthenticate] = "Bearer realm=\"popgate\""
            headers[.contentType] = "text/plain; charset=utf-8"
            return Response(
                status: .unauthorized,
                headers: headers,
                body: ResponseBody(
                    byteBuffer: ByteBuffer(
                        string: "a bearer token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n"
                    )
                )
            )
        }
        var response = try await next(request, context)
        // The page's own scripts, styles and stream then carry it without putting it in every address.
        if query != nil {
            response.headers[.setCookie] = "\(Self.cookieName)=\(offered); Path=/; HttpOnly; SameSite=Strict"
        }
        return response
    }

    static let cookieName = "popgate_token"

    static func cookie(_ header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let pair = part.trimmingPrefix(" ")
            if pair.hasPrefix(Self.cookieName + "=") { return String(pair.dropFirst(Self.cookieName.count + 1)) }
        }
        return nil
    }

    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for index in 0..<max(x.count, y.count) {
            difference |= (index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0)
        }
        return difference == 0
    }
}

extension LiveHTTP {
    /// `--http`: `HOST:PORT`, `[IPv6]:PORT`, or a bare port on 127.0.0.1 (loopback unless said otherwise).
    public static func endpoint(parsing text: String) throws -> Endpoint {
        if !text.isEmpty, text.allSatisfy(\.isNumber) {
            return try Endpoint(parsing: "127.0.0.1:\(text)", listening: true)
        }
        return try Endpoint(parsing: text, listening: true)
    }

    /// What is wrong with a token, if anything: it travels in a header, a query and a cookie, so it is visible
    /// ASCII without the characters those give a meaning to.
    public static func tokenProblem(_ token: String) -> String? {
        guard token.utf8.count >= 8 else { return "a token needs at least 8 characters" }
        let bad = token.unicodeScalars.first {
            $0.value <= 0x20 || $0.value >= 0x7F || ";,\"\\&=%+#?".unicodeScalars.contains($0)
        }
        return bad.map { "a token is visible ASCII without spaces or any of ; , \" \\ & = % + # ? (it has \"\($0)\")" }
    }

    /// Whether an address is one only this machine reaches.
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host.hasPrefix("127.") || host == "::1"
    }
}
