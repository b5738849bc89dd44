#!/usr/bin/env bash
# Records the sample captures in Captures/ and their golden transcripts: tcpdump on loopback around
# sessions that Python clients run through the gateway (popgate demo) to the embedded POP3 server, and
# through `popgate serve` to a Dovecot with TLS for STLS.
# Needs root (for tcpdump and Dovecot). Every process started here is stopped by its pid.
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
dovecot=""
serve=""
work=$(mktemp -d)
trap 'kill $demo $serve $dovecot 2>/dev/null || true; sleep 0.5; rm -rf "$maildrop" "$work"' EXIT
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null && break; sleep 0.1; done

record() {
  local name=$1 script=$2
  local port=${3:-$port}
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

record auth-login '
import socket, sys, base64
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); f = s.makefile("rb"); f.readline()
s.sendall(b"AUTH LOGIN\r\n"); f.readline()
s.sendall(base64.b64encode(b"alice") + b"\r\n"); f.readline()
s.sendall(base64.b64encode(b"wonderland") + b"\r\n"); f.readline()
s.sendall(b"STAT\r\n"); f.readline()
s.sendall(b"QUIT\r\n"); f.readline(); s.close()
'

# STLS: the embedded server has no TLS, so a Dovecot with a throw-away certificate stands behind the gateway.
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chmod 755 "$work"  # Dovecot's auth process runs as dovecot and reads the passwd file
mkdir -p "$work/run" "$work/state" "$work/home" "$work/mail/alice/new" "$work/mail/alice/cur" "$work/mail/alice/tmp"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=pop.popgate.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
printf 'Subject: over TLS\r\n\r\nSent after STLS.\r\n' > "$work/mail/alice/new/1.1.popgate"
echo 'alice:{PLAIN}wonderland::::::' > "$work/passwd"
chown -R 65534:65534 "$work/mail" "$work/home"
cat > "$work/dovecot.conf" <<CONF
protocols = pop3
listen = 127.0.0.1
base_dir = $work/run
state_dir = $work/state
log_path = $work/dovecot.log
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
disable_plaintext_auth = no
mail_location = maildir:$work/mail/%u
first_valid_uid = 1
default_login_user = dovenull
default_internal_user = dovecot
default_internal_group = dovecot
passdb {
  driver = passwd-file
  args = $work/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$work/home/%u
}
service pop3-login {
  inet_listener pop3 {
    port = $dport
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    port = 0
  }
}
CONF
/usr/sbin/dovecot -F -c "$work/dovecot.conf" &
dovecot=$!
"$bin/popgate" serve --listen "127.0.0.1:$sport" --upstream "127.0.0.1:$dport" > /dev/null 2>&1 &
serve=$!
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$sport)).close()" 2>/dev/null && break; sleep 0.1; done

record stls '
import poplib, ssl, sys
# "localhost" so that the ClientHello carries a server name.
p = poplib.POP3("localhost", int(sys.argv[1]))
p.capa()
context = ssl.create_default_context(); context.check_hostname = False; context.verify_mode = ssl.CERT_NONE
p.stls(context=context)
p.user("alice"); p.pass_("wonderland"); p.stat(); p.retr(1); p.quit()
' "$sport"
