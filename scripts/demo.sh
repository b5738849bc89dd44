#!/usr/bin/env bash
# The main job: build popgate and run its demo (embedded POP3 server + scripted session + live transcripts).
# Arguments go to `popgate demo`, e.g. scripts/demo.sh --once
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /opt/swift/usr/bin/swift ] && export PATH="/opt/swift/usr/bin:$PATH"
bash scripts/setup.sh demo
swift build --product popgate 2>&1 | { grep -vE '^\[[0-9]+/[0-9]+\]' || true; }
exec "$(swift build --show-bin-path)/popgate" demo "$@"
