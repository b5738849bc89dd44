#!/usr/bin/env bash
# Records the sample captures in Captures/ and their golden transcripts: tcpdump on loopback around
# sessions that Python clients run through the gateway (popgate demo) to the embedded POP3 server.
# Needs root (or CAP_NET_RAW) for tcpdump. Every process started here is stopped by its pid.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/setup.sh test
swift build --product popgate 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
bin="$(swift build --show-bin-path)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# A maildrop with a large message (number 2: the demo's own script deletes number 3), so a client can drop
# in the middle of its RETR.
maildrop=$(mktemp -d)
python3 - "$maildrop" <<'PY'
import sys
d = sys.argv[1]
open(f"{d}/1-hello.eml", "w").write("From: ada@example.org\r\nSubject: hello\r\n\r\nHello.\r\n")
open(f"{d}/3-dots.eml", "w").write("From: bob@example.org\r\nSubject: dots\r\n\r\n.signature\r\n.\r\nend\r\n")
open(f"{d}/2-large.eml", "w").write("From: carol@example.org\r\nSubject: large\r\n\r\n" + ("x" * 76 + "\r\n") * 20000)
PY
"$bin/popgate" demo --port "$port" --maildrop "$maildrop" --color never > /dev/null 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null || true; rm -rf "$maildrop"' EXIT
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null && break; sleep 0.1; done

record() {
  local name=$1 script=$2
  tcpdump -i lo -U -s 0 -w "Captures/$name.pcap" "tcp port $port" > /dev/null 2>&1 &
  local dump=$!
  sleep 1
  timeout 30 python3 - "$port" <<< "$script"
  sleep 1
  kill -INT $dump; wait $dump 2>/dev/null || true
  "$bin/popgate" inspect --color never "Captures/$name.pcap" > "Captures/$name.txt"
  echo "recorded Captures/$name.pcap and its transcript Captures/$name.txt"
}

record every-command '
import poplib, sys, hashlib, re
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.capa(); p.user("alice"); p.pass_("wonderland")
p.stat(); p.list(); p.list(2); p.uidl(); p.uidl(1); p.top(1, 2); p.retr(2); p.dele(1); p.noop(); p.rset()
p.quit()
'

record apop-and-pipelining '
import socket, sys, hashlib, re
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); f = s.makefile("rb")
greeting = f.readline().decode()
stamp = re.search(r"<[^>]*>", greeting).group(0)
digest = hashlib.md5((stamp + "wonderland").encode()).hexdigest()
s.sendall(("APOP alice " + digest + "\r\n").encode()); f.readline()
s.sendall(b"STAT\r\nLIST 1\r\nUIDL 2\r\nNOOP\r\nQUIT\r\n")
for _ in range(5): f.readline()
s.close()
'

record auth-plain '
import socket, sys, base64
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); f = s.makefile("rb"); f.readline()
s.sendall(b"AUTH PLAIN\r\n"); f.readline()
s.sendall(base64.b64encode(b"\0alice\0wonderland") + b"\r\n"); f.readline()
s.sendall(b"QUIT\r\n"); f.readline(); s.close()
'

record drop-mid-retr '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); f = s.makefile("rb"); f.readline()
s.sendall(b"USER alice\r\nPASS wonderland\r\n"); f.readline(); f.readline()
s.sendall(b"DELE 1\r\n"); f.readline()
s.sendall(b"RETR 2\r\n"); f.readline(); f.readline()
s.close()
'

record misbehaving '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); f = s.makefile("rb"); f.readline()
s.sendall(b"STAT\r\n"); f.readline()
s.sendall(b"PASS nobody-asked\r\n"); f.readline()
s.sendall(b"USER " + b"x" * 300 + b"\r\n"); f.readline()
s.sendall(b"RETR\r\n"); f.readline()
s.sendall(b"LAST\r\n"); f.readline()
s.sendall(b"USER alice\nPASS wonderland\n"); f.readline(); f.readline()
s.sendall(b"QUIT\r\n"); f.readline(); s.close()
'
