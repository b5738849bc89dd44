import NIOCore
import POP3Core

/// Reads the POP3 sessions out of packets: one session per TCP connection to a POP3 port (or one that
/// starts like POP3), reassembled and read by the same conversation machine as the relay.
public final class CaptureInspector {
    public struct Options: Sendable {
        /// Ports whose connections are POP3; 995 is read as implicit TLS.
        public var ports: Set<Int> = [110, 995]
        public var implicitTLSPorts: Set<Int> = [995]
        /// Octets one direction may hold waiting for a missing segment.
        public var reassemblyLimit = 4 << 20
        /// Octets all connections together may hold waiting; past it the largest holder gives up a hole.
        public var totalReassemblyLimit = 256 << 20
        /// Keep the RETR/TOP content events (for printing bodies); otherwise only their summaries are kept.
        public var keepBodies = false
        /// Write the plain-language notes (a summary does not need them).
        public var annotate = true

        public init() {}
    }

    /// One TCP connection read as a POP3 session.
    public final class Session {
        public let number: Int
        public let client: TCPEndpoint
        public let server: TCPEndpoint
        /// The innermost tunnel it came through, if any.
        public let tunnel: Tunnel?
        public let started: Double
        public internal(set) var machine: ConversationMachine
        /// Events with their capture times.
        public internal(set) var events: [(time: Double, event: ConversationEvent)] = []
        var clientStream: TCPReassembler
        var serverStream: TCPReassembler
        var clientFinished = false
        var serverFinished = false
        var closed = false
        var carriedData = false
        /// The TCP payload octets each side sent, as reassembled.
        public private(set) var clientOctets = 0
        public private(set) var serverOctets = 0
        /// Buffers reused from packet to packet.
        var outputs: [TCPReassembler.Output] = []
        var produced: [ConversationEvent] = []

        /// Whether the connection has ended (FIN both ways, or RST), or the capture has.
        public var isClosed: Bool { self.closed }
        /// The capture ended (or was stopped) while the connection was still open: neither side closed it.
        public private(set) var captureEnded = false

        init(
            number: Int,
            client: TCPEndpoint,
            server: TCPEndpoint,
            tunnel: Tunnel?,
            started: Double,
            options: Options
        ) {
            self.number = number
            self.client = client
            self.server = server
            self.tunnel = tunnel
            self.started = started
            var configuration = ConversationMachine.Configuration()
            configuration.implicitTLS = options.implicitTLSPorts.contains(server.port)
            configuration.annotate = options.annotate
            configuration.bodyChunks = options.keepBodies
            self.machine = ConversationMachine(configuration: configuration)
            self.clientStream = TCPReassembler(limit: options.reassemblyLimit)
            self.serverStream = TCPReassembler(limit: options.reassemblyLimit)
        }

        /// The server's address, with the tunnel it came through: `10.0.0.2:110 in VXLAN 42`.
        public var serverLabel: String { self.server.description + (self.tunnel.map { " in \($0)" } ?? "") }

        /// Counts of what the reassembly saw in both directions.
        public var retransmissions: Int { self.clientStream.retransmissions + self.serverStream.retransmissions }
        public var gaps: Int { self.clientStream.gaps + self.serverStream.gaps }
        public var conflicts: Int { self.clientStream.conflicts + self.serverStream.conflicts }
        public var limitHits: Int { self.clientStream.limitHits + self.serverStream.limitHits }
        var waitingOctets: Int { self.clientStream.waitingOctets + self.serverStream.waitingOctets }

        func feed(_ outputs: [TCPReassembler.Output], from side: Side, at time: Double) {
            for output in outputs {
                switch output {
                case .data(let buffer):
                    self.feed(buffer, from: side, at: time)
                case .gap(let octets):
                    self.carriedData = true
                    self.produced = self.machine.gap(side, octets: octets)
                    self.keep(at: time)
                }
            }
        }

        /// A segment's payload from one side: straight to the machine when it is the next in order with nothing
        /// waiting (most are), through the reassembly otherwise.
        func receive(_ sequence: UInt32, _ payload: ByteBuffer, from side: Side, at time: Double) {
            let length = payload.readableBytes
            let next =
                side == .client
                ? self.clientStream.inOrder(sequence, length: length)
                : self.serverStream.inOrder(sequence, length: length)
            if next { return self.feed(payload, from: side, at: time) }
            self.outputs.removeAll(keepingCapacity: true)
            if side == .client {
                self.clientStream.segment(sequence, payload, into: &self.outputs)
            } else {
                self.serverStream.segment(sequence, payload, into: &self.outputs)
            }
            self.feed(self.outputs, from: side, at: time)
        }

        /// Octets in order from one side.
        func feed(_ buffer: ByteBuffer, from side: Side, at time: Double) {
            self.carriedData = true
            self.produced.removeAll(keepingCapacity: true)
            if side == .client {
                self.clientOctets += buffer.readableBytes
                self.machine.clientSent(buffer, at: time, into: &self.produced)
            } else {
                self.serverOctets += buffer.readableBytes
                self.machine.serverSent(buffer, at: time, into: &self.produced)
            }
            self.keep(at: time)
        }

        /// The events made, with their time (a reader that keeps no body was given no body chunks).
        private func keep(at time: Double) {
            for event in self.produced { self.events.append((time, event)) }
        }

        /// The capture ended with the connection open: what waited behind holes is given up, and no side is
        /// said to have closed (so nothing is flagged that a close would mean).
        func endOfCapture(at time: Double) {
            guard !self.closed else { return }
            self.closed = true
            self.captureEnded = true
            self.feed(self.clientStream.finish(), from: .client, at: time)
            self.feed(self.serverStream.finish(), from: .server, at: time)
            let note = "The capture ended; the connection was still open (neither side had closed it)."
            self.events.append((time, .annotation(.capture, note)))
        }

        func close(at time: Double) {
            guard !self.closed else { return }
            self.closed = true
            self.feed(self.clientStream.finish(), from: .client, at: time)
            self.feed(self.serverStream.finish(), from: .server, at: time)
            for event in self.machine.clientClosed(at: time) + self.machine.serverClosed(at: time) {
                self.events.append((time, event))
            }
        }
    }

    struct FlowKey: Hashable {
        var a: TCPEndpoint
        var b: TCPEndpoint
        var tunnel: UInt64

        init(_ x: TCPEndpoint, _ y: TCPEndpoint, tunnel: UInt64 = 0) {
            self.tunnel = tunnel
            let first = x.address == y.address ? x.port < y.port : x.address < y.address
            if first {
                (self.a, self.b) = (x, y)
            } else {
                (self.a, self.b) = (y, x)
            }
        }
    }

    public let options: Options
    private var allSessions: [Session] = []
    /// The sessions that carried data, in the order they started (refused or empty connections are left out).
    public var sessions: [Session] { self.allSessions.filter(\.carriedData) }
    private var open: [FlowKey: Session] = [:]
    /// The connection of the packet before: most packets follow one of their own, so most need no hash.
    private var recent: (key: FlowKey, session: Session)?
    /// Connections that are not POP3: remembered so they are not looked at again.
    private var ignored: Set<FlowKey> = []
    /// Connections whose SYN was seen before they were known to be POP3.
    private var synSeen: Set<FlowKey> = []
    /// Connections that ended: late packets (ACKs, retransmitted FINs) are not a new session.
    private var ended: Set<FlowKey> = []
    private var lastTime = 0.0
    /// Octets waiting behind holes in every open connection, kept within `totalReassemblyLimit`.
    public private(set) var waitingOctets = 0
    /// How often the overall limit made a connection give up a hole.
    public private(set) var totalLimitHits = 0
    /// How often one direction's own limit made it give up a hole.
    public private(set) var flowLimitHits = 0
    private var started = 0

    public init(options: Options = Options()) {
        self.options = options
    }

    public func packet(_ segment: TCPSegment, at time: Double) {
        self.lastTime = max(self.lastTime, time)
        let key = FlowKey(segment.source, segment.destination, tunnel: segment.tunnel)
        let session: Session
        if let recent = self.recent, recent.key == key {
            session = recent.session
        } else if self.ignored.contains(key) {
            return
        } else if let existing = self.open[key] {
            session = existing
            self.recent = (key, existing)
        } else {
            // Only a new SYN reopens a connection that ended (the same ports, used again).
            if self.ended.contains(key) {
                guard segment.syn, !segment.ack else { return }
                self.ended.remove(key)
            }
            guard let server = self.serverEnd(of: segment) else {
                if segment.payload.readableBytes > 0 { Self.remember(key, in: &self.ignored) }
                // On a port not known to be POP3 the session is found by its greeting: its SYN came before.
                if segment.syn { Self.remember(key, in: &self.synSeen) }
                return
            }
            let client = server == segment.source ? segment.destination : segment.source
            self.started += 1
            session = Session(
                number: self.started,
                client: client,
                server: server,
                tunnel: segment.tunnelName,
                started: time,
                options: self.options
            )
            // No SYN: the capture began after the connection did, so it is read from where it is.
            if !segment.syn, self.synSeen.remove(key) == nil { session.machine.pickUpMidway() }
            self.allSessions.append(session)
            self.open[key] = session
            self.recent = (key, session)
        }
        let waitingBefore = session.waitingOctets
        let limitHitsBefore = session.limitHits
        defer {
            self.flowLimitHits += session.limitHits - limitHitsBefore
            self.waitingOctets += session.waitingOctets - waitingBefore
            if self.waitingOctets > self.options.totalReassemblyLimit { self.relieve(at: time) }
        }
        let fromClient = segment.source == session.client
        if segment.syn {
            if fromClient {
                session.clientStream.syn(segment.sequence)
            } else {
                session.serverStream.syn(segment.sequence)
            }
        }
        // What this side acknowledges of the other's was received: holes there are given up first, so that the
        // other side's data is read before this segment's, as it happened.
        if segment.ack {
            session.outputs.removeAll(keepingCapacity: true)
            let now = segment.payload.readableBytes > 0
            if fromClient {
                session.serverStream.acknowledged(segment.acknowledgment, now: now, into: &session.outputs)
                if !session.outputs.isEmpty { session.feed(session.outputs, from: .server, at: time) }
            } else {
                session.clientStream.acknowledged(segment.acknowledgment, now: now, into: &session.outputs)
                if !session.outputs.isEmpty { session.feed(session.outputs, from: .client, at: time) }
            }
        }
        session.receive(segment.sequence, segment.payload, from: fromClient ? .client : .server, at: time)
        if segment.rst {
            session.close(at: time)
            self.open[key] = nil
            self.recent = nil
            Self.remember(key, in: &self.ended)
        } else if segment.fin {
            let end = segment.sequence &+ UInt32(segment.payload.readableBytes)
            if fromClient {
                session.clientFinished = true
                session.clientStream.fin(end)
            } else {
                session.serverFinished = true
                session.serverStream.fin(end)
            }
            if session.clientFinished && session.serverFinished {
                session.close(at: time)
                self.open[key] = nil
                self.recent = nil
                Self.remember(key, in: &self.ended)
            }
        }
    }

    /// Over the overall limit: the directions holding the most give up their oldest holes until it holds.
    private func relieve(at time: Double) {
        while self.waitingOctets > self.options.totalReassemblyLimit {
            guard let session = self.open.values.max(by: { $0.waitingOctets < $1.waitingOctets }),
                session.waitingOctets > 0
            else { return }
            let before = session.waitingOctets
            let client = session.clientStream.waitingOctets >= session.serverStream.waitingOctets
            session.outputs.removeAll(keepingCapacity: true)
            if client {
                session.clientStream.giveUpOldestHole(into: &session.outputs)
                session.feed(session.outputs, from: .client, at: time)
            } else {
                session.serverStream.giveUpOldestHole(into: &session.outputs)
                session.feed(session.outputs, from: .server, at: time)
            }
            self.totalLimitHits += 1
            self.waitingOctets -= before - session.waitingOctets
        }
    }

    /// Which end is the POP3 server: a POP3 port, or the side that greets with "+OK".
    private func serverEnd(of segment: TCPSegment) -> TCPEndpoint? {
        if self.options.ports.contains(segment.destination.port) { return segment.destination }
        if self.options.ports.contains(segment.source.port) { return segment.source }
        if segment.payload.readableBytesView.starts(with: Array("+OK ".utf8)) { return segment.source }
        return nil
    }

    /// Remembers a connection, forgetting all once there are many: a capture that runs for days stays bounded.
    private static func remember(_ key: FlowKey, in set: inout Set<FlowKey>) {
        if set.count >= 100_000 { set.removeAll(keepingCapacity: true) }
        set.insert(key)
    }

    /// Lets go of the sessions that have ended (a live capture, once they are printed).
    public func forgetEnded() {
        self.allSessions.removeAll { $0.closed }
    }

    /// The end of the capture: every session still open ends as it stands, said to be cut by the capture, not
    /// closed by either side.
    public func finish() {
        for session in self.allSessions where !session.closed { session.endOfCapture(at: self.lastTime) }
        self.open.removeAll()
        self.recent = nil
        self.waitingOctets = 0
    }
}
