#!/usr/bin/env bash
# Runs each libFuzzer target: built with --sanitize=fuzzer --sanitize=address in .build-fuzz, seeded from the
# project's own files, for SECONDS each (default 60) or, with --runs N, for N inputs each. --jobs J: J libFuzzer
# processes share each target's corpus (one per core), the N inputs split among them and summed in the log.
# Targets named (fuzz-rules ...) run alone. --smoke: a few seconds each, failing unless libFuzzer reports runs
# (what the tests run). A crash leaves its input in .build-fuzz/crashes/TARGET/ and fails the script: make it a
# regression test. Each run but a smoke run is added to Fuzz/runs.tsv ($FUZZ_LEDGER if set, smoke runs too) with
# the version of the code it fuzzed; --ledger: per target, the inputs on its code as committed now (RESULTS.md).
# Usage: scripts/fuzz.sh [--smoke] [--runs N] [--jobs J] [SECONDS] [TARGET...]
#        scripts/fuzz.sh --ledger | --code TARGET
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
seconds=60
runs=""
smoke=""
jobs=1
targets=()
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "$1"; }
all=(fuzz-proxy-header fuzz-rules fuzz-conversation fuzz-relay fuzz-packets fuzz-config)
known() { [[ " ${all[*]} " == *" $1 "* ]]; }
# What each target fuzzes: its harness and the sources it reaches. A change to any of them starts its count anew.
paths() {
  local common=(Fuzz/FuzzDriver "Fuzz/$1")
  case "$1" in
    fuzz-proxy-header) echo "${common[*]} Sources/POP3Core/ProxyProtocol" ;;
    fuzz-rules) echo "${common[*]} Sources/POP3Rules" ;;
    fuzz-conversation) echo "${common[*]} Fuzz/fuzz-conversation.dict Sources/POP3Core Sources/CPOP3Scan" ;;
    fuzz-relay) echo "${common[*]} Sources/POP3Core Sources/CPOP3Scan Sources/POP3Relay/Machine Sources/POP3Relay/Rules Sources/POP3Rules" ;;
    fuzz-packets) echo "${common[*]} Sources/POP3Capture Sources/CLibpcap" ;;
    fuzz-config) echo "${common[*]} Sources/PopgateCLI/Serve/ConfigFile.swift Sources/POP3Relay/RelayConfiguration.swift" ;;
  esac
}
# The version of what TARGET fuzzes: the committed objects of its paths, or "uncommitted" when the work tree
# differs from them (such a run is logged but counts for no version).
code() {
  local files
  read -r -a files <<< "$(paths "$1")"
  if [ -n "$(git status --porcelain -- "${files[@]}" 2>/dev/null)" ]; then echo uncommitted; return; fi
  for file in "${files[@]}"; do git rev-parse "HEAD:$file" 2>/dev/null || echo "-"; done | sha1sum | cut -c1-12
}
ledger="${FUZZ_LEDGER:-Fuzz/runs.tsv}"
# Smoke runs (the tests') go only to a ledger named for them: the tests check the rows a run adds.
smokeLedger="${FUZZ_LEDGER:-}"
# Per target: the inputs on the code as committed now (rows of the ledger with its version), crashes among them.
report() {
  for target in "${all[@]}"; do
    awk -F'\t' -v target="$target" -v code="$(code "$target")" '
      $1 ~ /^#/ || $2 != target { next }
      $5 == code && code != "uncommitted" { n += $3; c += $4; if (first == "") first = $1; last = $1; next }
      { earlier += $3 }
      END {
        if (code == "uncommitted") {
          printf "%s: the code it fuzzes has uncommitted changes: no version to count for", target
        } else {
          verdict = c > 0 ? "a crash to fix" : n >= 10000000 ? "met" : "short of 10,000,000"
          printf "%s: %d inputs on the code as it is now (%s), %d crash(es): %s", target, n, code, c, verdict
        }
        if (n > 0) printf first == last ? "; run on %s" : "; runs from %s to %s", first, last
        if (earlier > 0) printf "; %d more on earlier versions", earlier
        printf "\n"
      }' "$ledger"
  done
}
# A row of the ledger: date, target, inputs, crashes, and the code's version and commit when the run began.
record() {
  [ -z "$smoke" ] || [ -n "$smokeLedger" ] || return 0
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%d)" "$1" "$2" "$3" "$version" \
    "scripts/fuzz.sh at $commit, $jobs process(es)${smoke:+, smoke}" >> "$ledger"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --ledger) report; exit 0 ;;
    --code)
      [ $# -ge 2 ] && known "$2" || { echo "fuzz.sh: --code needs a target (${all[*]})" >&2; exit 2; }
      code "$2"; exit 0 ;;
    --smoke) smoke=1; seconds=5 ;;
    --runs|--jobs)
      [ $# -ge 2 ] || { echo "fuzz.sh: $1 needs a number" >&2; usage 2 >&2; }
      if [ "$1" = --runs ]; then runs="$2"; else jobs="$2"; fi
      shift ;;
    -h|--help) usage 0 ;;
    fuzz-*) targets+=("$1") ;;
    -*) echo "fuzz.sh: no option $1" >&2; usage 2 >&2 ;;
    *) seconds="$1" ;;
  esac
  shift
done
for number in "$seconds" "$jobs" ${runs:+"$runs"}; do
  [[ "$number" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: '$number' is not a positive whole number" >&2; usage 2 >&2; }
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for target in "${targets[@]}"; do
  known "$target" || { echo "fuzz.sh: no target $target (targets: ${all[*]})" >&2; exit 2; }
done
export SWIFT_BACKTRACE=enable=no   # the backtracer can hang after a crash
# Without allocation stacks (a finding's input is rerun to see them) and without the per-input leak check:
# in fuzz-rules' profiles the leak check took a third of the time and allocation stacks a tenth. Memory
# stays bounded by -rss_limit_mb.
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0}"

seeds=".build-fuzz/seeds"
mkdir -p "$seeds/fuzz-proxy-header" "$seeds/fuzz-rules"
printf 'PROXY TCP4 192.0.2.7 10.0.0.1 51234 110\r\n' > "$seeds/fuzz-proxy-header/v1"
printf 'PROXY TCP6 2001:db8::7 2001:db8::1 1 995\r\n' > "$seeds/fuzz-proxy-header/v6"
printf 'PROXY UNKNOWN\r\n' > "$seeds/fuzz-proxy-header/unknown"
printf '\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x0a\x00\x00\x01\xc8\x22\x00\x6e' > "$seeds/fuzz-proxy-header/v2"
cp Rules/default.rules Rules/examples/*.rules "$seeds/fuzz-rules/"
# The conversation machine's seeds: each Captures/ session as the target reads input, chunks of at most 127
# octets, each behind its header octet (top bit: the server's).
mkdir -p "$seeds/fuzz-conversation"
for capture in Captures/*.pcap; do
  name=$(basename "$capture" .pcap)
  tshark -r "$capture" -q -z follow,tcp,raw,0 2>/dev/null | python3 -c '
import sys
out = bytearray()
for line in sys.stdin:
    text = line.rstrip("\n")
    server = text.startswith("\t")
    text = text.strip()
    if not text or any(c not in "0123456789abcdef" for c in text):
        continue
    data = bytes.fromhex(text)
    for at in range(0, len(data), 127):
        piece = data[at:at + 127]
        out.append((0x80 if server else 0) | len(piece))
        out += piece
sys.stdout.buffer.write(bytes(out))
' > "$seeds/fuzz-conversation/$name" || true
done

# The relay machine's seed: connect, admit, connected, a greeting, USER/PASS/QUIT and their replies, closes.
mkdir -p "$seeds/fuzz-relay"
printf '\x00\x00\x01\x03\x05+OK\r\n\x02\x0cUSER a\r\nQUIT\r\n\x03\x0a+OK\r\n+OK\r\n\x06\x07' > "$seeds/fuzz-relay/login"
# The packet decoders' seeds: each Captures/ file's frames behind their link type's index and a length.
mkdir -p "$seeds/fuzz-packets"
for capture in Captures/*.pcap; do
  python3 - "$capture" "$seeds/fuzz-packets/$(basename "$capture" .pcap)" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
little = data[:4] == b"\xd4\xc3\xb2\xa1" or data[:4] == b"\x4d\x3c\xb2\xa1"
order = "<" if little else ">"
link = struct.unpack(order + "I", data[20:24])[0]
links = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]
out = bytearray([links.index(link) if link in links else 1])
at = 24
while at + 16 <= len(data) and len(out) < 60000:
    length = struct.unpack(order + "I", data[at + 8:at + 12])[0]
    frame = data[at + 16:at + 16 + length]
    out += struct.pack(">H", len(frame)) + frame
    at += 16 + length
open(sys.argv[2], "wb").write(bytes(out))
PY
done
# The configuration loader's seeds: the README's and the tests' YAML.
mkdir -p "$seeds/fuzz-config"
printf 'listeners:\n  - name: front\n    listen: [127.0.0.1:1110, "[::1]:1110"]\n    upstream: mail.example.org:110\n    cert: c.pem\n    key: k.pem\n    sni:\n      - { names: [pop.example.org], cert: p.pem, key: p.key }\nproxy-trusted: [10.0.0.10/32]\ntimeouts: { idle: 600, connect: 10 }\nhttp: 127.0.0.1:8110\nrules: r.rules\n' > "$seeds/fuzz-config/full.yaml"
printf 'listen: 127.0.0.1:1110\nupstream: pop://legacy.example.org\nlive: true\nmax-connections: 5000\n' > "$seeds/fuzz-config/flat.yaml"
status=0
for target in "${targets[@]}"; do
  echo "== $target"
  # The code this run fuzzes, as it is when it begins (a commit during a long run does not move it).
  version=$(code "$target")
  commit=$(git rev-parse --short HEAD)
  # One -sanitize flag with both: swift-driver keeps only the last of several, and SwiftPM's order of its two
  # varies, so a build had either no coverage (libFuzzer ran blind) or no address sanitizer in Swift code.
  # Release: whole-module optimization specializes the generics a debug build calls across files (the
  # conversation machine's queue, ByteBuffer's writes), 3.4 times fuzz-conversation's inputs per second.
  # Preconditions and bounds checks stay in, and they are what a finding trips. fuzz-relay needs `@testable
  # import`, which only a debug build allows: it stays debug, with -O.
  config=(-c release)
  [ "$target" = fuzz-relay ] && config=(-c debug -Xswiftc -O)
  swift build "${config[@]}" --product "$target" --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize=fuzzer,address --build-path .build-fuzz 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]|Cannot export local symbol' || true; }
  corpus=".build-fuzz/corpus/$target"
  crashes=".build-fuzz/crashes/$target"
  mkdir -p "$corpus" "$crashes"
  limit=(-max_total_time="$seconds")
  [ -n "$runs" ] && limit=(-runs="$(( (runs + jobs - 1) / jobs ))")
  [ -f "Fuzz/$target.dict" ] && limit+=(-dict="Fuzz/$target.dict")
  # Streams fed an octet at a time: short inputs keep the rate up (whole captures are seeds, cut to this).
  [ "$target" = fuzz-conversation ] && limit+=(-max_len=1024)
  [ "$target" = fuzz-relay ] && limit+=(-max_len=512)
  [ "$target" = fuzz-packets ] && limit+=(-max_len=8192)
  # Rules files past 1 KiB (twenty-odd rules and includes) add lines, not constructs; the text is parsed twice
  # per input, and 2 KiB ran at less than half the rate.
  [ "$target" = fuzz-rules ] && limit+=(-max_len=1024)
  log=".build-fuzz/$target.log"
  # J processes on one corpus directory: each picks up what the others add (what libFuzzer's -jobs does).
  pids=()
  for job in $(seq 1 "$jobs"); do
    ".build-fuzz/${config[1]}/$target" "$corpus" "$seeds/$target" "${limit[@]}" -rss_limit_mb=2048 -detect_leaks=0 \
      -artifact_prefix="$crashes/" > "$log.$job" 2>&1 &
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  cat $(seq -f "$log.%g" 1 "$jobs") > "$log"
  if [ "$jobs" -gt 1 ]; then
    # The processes' counts summed, the longest time: one Done line for the target.
    total=$(grep -hoE '^Done [0-9]+ runs' "$log" | awk '{ n += $2 } END { print n + 0 }')
    longest=$(grep -hoE '^Done [0-9]+ runs in [0-9]+' "$log" | awk '{ if ($5 > t) t = $5 } END { print t + 0 }')
    echo "Done $total runs in $longest second(s), $jobs processes on one corpus" >> "$log"
  fi
  rm -f $(seq -f "$log.%g" 1 "$jobs")
  if [ "$failed" = 1 ]; then
    echo "$target: libFuzzer stopped with a finding; see $log and $crashes/"
    tail -20 "$log"
    record "$target" 0 1
    status=1
    continue
  fi
  counters=$(grep -oE 'Loaded 1 modules +\([0-9]+ inline' "$log" | grep -oE '[0-9]+ inline' | grep -oE '[0-9]+' | sed -n 1p || echo 0)
  if [ "${counters:-0}" -lt 5000 ]; then
    echo "$target: only ${counters:-0} coverage counters: the Swift code is not instrumented, the run was blind"
    status=1
  fi
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
  echo "$target: ${done_line:-no Done line}; $(grep -oE 'cov: [0-9]+' "$log" | tail -1)"
  if [ -n "$done_line" ] && [ "${counters:-0}" -ge 5000 ]; then
    record "$target" "$(echo "$done_line" | grep -oE '[0-9]+' | head -1)" 0
  fi
  if [ -n "$smoke" ] && ! echo "$done_line" | grep -qE '^Done [1-9][0-9]* runs'; then
    echo "$target: no runs reported"
    status=1
  fi
done
exit $status
