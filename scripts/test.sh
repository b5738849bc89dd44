#!/usr/bin/env bash
# Every test: formatting, a warnings-as-errors build, and the whole suite (which starts its own
# servers on loopback and reads ../shared/captures/).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/setup.sh test

echo "== swift format lint"
swift format lint --strict --recursive Sources Tests Benchmarks Fuzz Package.swift

echo "== swift build"
swift build --build-tests -Xswiftc -warnings-as-errors 2>&1 \
  | { grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Write|Linking|Applying)' || true; }

echo "== swift test"
# In parallel, every suite but the low-descriptor test, which drives a gateway into running out of descriptors
# and beside the rest slows every other test's gateway for tens of seconds: it runs on its own afterwards.
# (The suite ran one test at a time for a while: the tests' children inherited the test process's sockets, so a
# closed client stayed open in them. They get none now, see Tests/Support/ChildProcess.swift.)
swift test --skip-build --parallel --skip lowDescriptorLimit
echo "== swift test (alone: a gateway out of descriptors)"
swift test --skip-build --filter lowDescriptorLimit
echo "== the operator's kit (man page, completions, systemd unit)"
bash scripts/check-kit.sh
echo "== fuzz smoke (each libFuzzer target a few seconds; scripts/fuzz.sh SECONDS for a longer run)"
# The smoke runs' rows go to a ledger of their own, checked: each target once, with inputs and its code's version.
smoke_ledger=$(mktemp)
FUZZ_LEDGER="$smoke_ledger" bash scripts/fuzz.sh --smoke
for target in fuzz-proxy-header fuzz-rules fuzz-conversation fuzz-relay fuzz-packets fuzz-config; do
  version=$(bash scripts/fuzz.sh --code "$target")
  awk -F'\t' -v t="$target" -v v="$version" '$2 == t && $3 > 0 && $4 == 0 && $5 == v { n++ } END { exit n == 1 ? 0 : 1 }' \
    "$smoke_ledger" || { echo "fuzz ledger: no one row for $target (version $version):"; cat "$smoke_ledger"; exit 1; }
done
rm -f "$smoke_ledger"
echo "fuzz ledger: each smoke run recorded with its code's version"
