#!/usr/bin/env bash
# Benchmarks (not tests): the conversation machine's throughput; popgate serve beside a direct connection
# and haproxy's TCP relay, in one run, as ratios; popgate inspect against tshark on a 200 MB capture. Installs haproxy when missing. Arguments go to the relay
# benchmark, e.g. scripts/bench.sh --seconds 10
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/setup.sh test
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy >/dev/null
fi
swift build -c release 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
bin="$(swift build -c release --show-bin-path)"
"$bin/popgate-bench"
echo
PATH="$PATH:/usr/sbin" "$bin/popgate-relay-bench" "$@"
echo
"$bin/popgate-inspect-bench"
