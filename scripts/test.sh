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
# The low-descriptor test drives a gateway into running out of descriptors; beside the rest of the parallel
# suite it slows every other test's gateway for tens of seconds, so it runs on its own afterwards.
# One test at a time: run in parallel on a 2-core machine, the suites that start Dovecot, HAProxy, Prometheus and
# load generators slowed the timing tests into failures (a vanished client's session not ended within their
# wait: under investigation, see the note of issue 10); serial, the suite takes about three minutes.
swift test --skip-build --no-parallel --skip lowDescriptorLimit --skip LivePageTests
echo "== swift test (alone: the live page in Chromium, Prometheus; a browser beside the rest slows both)"
swift test --skip-build --filter LivePageTests
echo "== swift test (alone: a gateway out of descriptors)"
swift test --skip-build --filter lowDescriptorLimit
echo "== the operator's kit (man page, completions, systemd unit)"
bash scripts/check-kit.sh
echo "== fuzz smoke (each libFuzzer target a few seconds; scripts/fuzz.sh SECONDS for a longer run)"
bash scripts/fuzz.sh --smoke
