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
bash scripts/fuzz.sh --smoke
