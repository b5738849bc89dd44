#!/usr/bin/env bash
# Benchmarks (not tests): the conversation machine's throughput; popgate serve beside a direct connection,
# haproxy's TCP relay and nginx's mail proxy, in one run, as ratios (and CPU per session and per GB); popgate inspect against tshark on a 200 MB capture. Installs haproxy and nginx's mail module when missing. Arguments go to the relay
# benchmark, e.g. scripts/bench.sh --seconds 10
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
# With the anchors: haproxy's TCP relay and nginx's mail proxy.
bash scripts/setup.sh bench
swift build -c release 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
bin="$(swift build -c release --show-bin-path)"
"$bin/popgate-machine-bench"
echo
PATH="$PATH:/usr/sbin" "$bin/popgate-relay-bench" "$@"
echo
# The same with TLS for the clients: popgate --listen-tls, haproxy's ssl bind, nginx's mail ssl listener.
PATH="$PATH:/usr/sbin" "$bin/popgate-relay-bench" --tls "$@"
echo
"$bin/popgate-inspect-bench"
