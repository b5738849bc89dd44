// The relay machine is internal to POP3Relay, so this target needs `@testable import`, which only a debug build
// (as scripts/fuzz.sh makes) allows; in a release build (`swift build -c release` builds every product) it is a
// stub that says so.
#if DEBUG
import FuzzDriver
import NIOCore
import POP3Core

@testable import POP3Relay

/// libFuzzer's entry: the relay session machine fed an arbitrary sequence of events (each an opcode octet, and
/// for reads a length octet and that many octets), with time moving on. Checked: no crash; never QUIT written
/// upstream unless the client sent QUIT (invariant 3); nothing written to a side after its close; the
/// session ends at most once, and once both sides are closed it has ended.
private let quit = Array("QUIT".utf8)
private let quitLine = Array("QUIT\r\n".utf8)
private func upper(_ octet: UInt8) -> UInt8 { octet >= 0x61 && octet <= 0x7A ? octet - 0x20 : octet }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRelay(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    var settings = RelayMachine.Settings(upstream: "up:110")
    let flags = data[0]
    settings.clientTLS = flags & 1 != 0
    settings.terminatesSTLS = flags & 2 != 0
    settings.requireTLS = flags & 4 != 0
    settings.export = flags & 8 != 0
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var machine = RelayMachine(settings: settings, now: now, wallClock: 1_800_000_000)
    var actions: [RelayMachine.Action] = []
    var clientSentQuit = false
    // The client's last octets, upper-cased: a QUIT split across reads is still the client's.
    var clientTail: [UInt8] = []
    var closed: (client: Bool, upstream: Bool) = (false, false)
    var ended = 0
    var index = 1
    func bytes() -> ByteBuffer {
        guard index < count else { return ByteBuffer() }
        let length = min(Int(data[index]), count - index - 1)
        let buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data + index + 1, count: length))
        index += 1 + length
        return buffer
    }
    // What the executor may deliver next, as NIO would: an answer only to what was asked (one admission, one
    // connect outcome, one handshake per TLS start), nothing on a side after its close.
    var admitAsked = false
    var connectAsked = false
    var clientTLSAsked = settings.clientTLS
    var upstreamTLSAsked = false
    var upstreamOpen = false
    var clientOpen = true
    var clientInputOpen = true
    machine.clientConnected(now: now, into: &actions)
    func check() {
        for action in actions {
            switch action {
            case .admit: admitAsked = true
            case .connectUpstream: connectAsked = true
            case .startTLS, .beginClientTLS: clientTLSAsked = true
            case .startUpstreamTLS: upstreamTLSAsked = true
            case .write(let side, let buffer):
                precondition(!(side == .client ? closed.client : closed.upstream), "a write to a side after its close")
                if side == .upstream, !clientSentQuit {
                    let text = buffer.readableBytesView.map(upper)
                    precondition(text.firstRange(of: quitLine) == nil, "QUIT upstream that the client never sent")
                }
            case .close(let side): if side == .client { closed.client = true } else { closed.upstream = true }
            case .ended: ended += 1
            default: break
            }
        }
        actions.removeAll(keepingCapacity: true)
        precondition(ended <= 1, "the session ended twice")
    }
    check()
    while index < count {
        let op = data[index] % 16
        index += 1
        now = now + .milliseconds(Int64(data[index - 1] / 16) * 250)
        let upstreamLive = upstreamOpen && !closed.upstream
        let clientLive = clientOpen && !closed.client
        switch op {
        case 0 where admitAsked:
            admitAsked = false
            machine.admitted(.admit, now: now, into: &actions)
        case 1 where connectAsked:
            connectAsked = false
            upstreamOpen = true
            machine.upstreamConnected(now: now, into: &actions)
        case 2 where clientLive && clientInputOpen:
            let read = bytes()
            // Across reads, in any case: a QUIT split in two is still the client's.
            clientTail += read.readableBytesView.map(upper)
            if clientTail.firstRange(of: quit) != nil { clientSentQuit = true }
            clientTail = Array(clientTail.suffix(3))
            machine.clientRead(read, now: now, into: &actions)
        case 3 where upstreamLive: machine.upstreamRead(bytes(), now: now, into: &actions)
        case 4 where clientLive: machine.clientReadComplete(into: &actions)
        case 5 where upstreamLive: machine.upstreamReadComplete(into: &actions)
        case 6 where clientOpen:
            clientOpen = false
            machine.clientClosed(now: now, into: &actions)
        case 7 where upstreamOpen:
            upstreamOpen = false
            machine.upstreamClosed(now: now, into: &actions)
        case 8 where clientLive && clientInputOpen:
            clientInputOpen = false
            machine.clientInputClosed(now: now, into: &actions)
        case 9: machine.deadlineReached(now: now + .seconds(700), into: &actions)
        case 10 where clientLive:
            machine.writabilityChanged(.client, writable: data[index - 1] & 0x10 != 0, into: &actions)
        case 11 where upstreamLive:
            machine.writabilityChanged(.upstream, writable: data[index - 1] & 0x10 != 0, into: &actions)
        case 12 where clientTLSAsked && clientLive:
            clientTLSAsked = false
            machine.clientTLSEstablished(version: "TLS 1.3", now: now, into: &actions)
        case 13 where connectAsked:
            connectAsked = false
            machine.upstreamConnectFailed("refused", now: now, into: &actions)
        case 14 where clientOpen:
            clientOpen = false
            machine.clientFailed("reset", now: now, into: &actions)
        case 15 where upstreamTLSAsked && upstreamLive:
            upstreamTLSAsked = false
            machine.upstreamTLSEstablished(version: "TLS 1.3", now: now, into: &actions)
        case 15: machine.shutdownRequested(now: now, into: &actions)
        default: break
        }
        check()
    }
    // NIO closes what is left: once both sides are closed, the session has ended.
    if clientOpen { machine.clientClosed(now: now, into: &actions) }
    if upstreamOpen { machine.upstreamClosed(now: now, into: &actions) }
    if connectAsked { machine.upstreamConnectFailed("closed", now: now, into: &actions) }
    check()
    precondition(ended == 1, "both sides closed and the session has not ended")
    return 0
}

@_cdecl("fuzz_relay_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzzRelay(data, size) }
}
#else
@_cdecl("fuzz_relay_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    print("fuzz-relay is built for fuzzing in the debug configuration: scripts/fuzz.sh")
    return 1
}
#endif
