import NIOConcurrencyHelpers
import POP3Core

/// A sink that renders each session's transcript and hands whole lines to `output`, one session's
/// lines at a time, so concurrent sessions never interleave within a batch.
public final class TranscriptPrinter: ConversationSink {
    private struct State {
        var renderers: [String: TranscriptRenderer] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let format: TranscriptRenderer.Format
    private let color: Bool
    private let showBodies: Bool
    private let output: @Sendable ([String]) -> Void
    private let onEnd: (@Sendable (SessionInfo, SessionSummary) -> Void)?

    public init(
        format: TranscriptRenderer.Format = .text,
        color: Bool = false,
        showBodies: Bool = false,
        output: @escaping @Sendable ([String]) -> Void,
        onEnd: (@Sendable (SessionInfo, SessionSummary) -> Void)? = nil
    ) {
        self.format = format
        self.color = color
        self.showBodies = showBodies
        self.output = output
        self.onEnd = onEnd
    }

    public func sessionStarted(_ session: SessionInfo, time: Double) {
        let lines = self.state.withLockedValue { state in
            var renderer = TranscriptRenderer(
                session: session.id,
                format: self.format,
                color: self.color,
                showBodies: self.showBodies
            )
            let lines = renderer.start(
                time: time,
                client: session.client,
                server: session.server,
                via: session.via,
                gateway: session.gateway
            )
            state.renderers[session.id] = renderer
            return lines
        }
        self.output(lines)
    }

    public func events(_ events: [ConversationEvent], session: SessionInfo, time: Double) {
        let lines = self.state.withLockedValue { state in
            guard var renderer = state.renderers[session.id] else { return [String]() }
            let lines = events.flatMap { renderer.render($0, time: time) }
            state.renderers[session.id] = renderer
            return lines
        }
        if !lines.isEmpty { self.output(lines) }
    }

    public func sessionEnded(_ session: SessionInfo, time: Double, summary: SessionSummary) {
        let lines = self.state.withLockedValue { state in
            guard var renderer = state.renderers.removeValue(forKey: session.id) else { return [String]() }
            return renderer.end(time: time, summary: summary.description)
        }
        self.output(lines)
        self.onEnd?(session, summary)
    }
}
