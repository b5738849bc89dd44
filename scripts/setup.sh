#!/usr/bin/env bash
# Installs what popgate needs on a Debian machine, and only what is missing.
#   scripts/setup.sh demo    build and run the demo
#   scripts/setup.sh test    build and run every test
#   scripts/setup.sh bench   the tests' needs and the benchmarks' anchors (haproxy, nginx's mail proxy)
set -euo pipefail

purpose=${1:-demo}
packages=(libpcap-dev pkg-config)
if [ "$purpose" = bench ]; then
  packages+=(nginx-light libnginx-mod-mail)
  purpose=test
fi
if [ "$purpose" = test ]; then
  packages+=(dovecot-pop3d tshark tcpdump curl python3 openssl haproxy)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # tshark asks whether non-root users may capture; the default answer is fine.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The live page's tests: a real browser and its driver, a real Prometheus; the operator's kit's checks (a man
# page linter, zsh for the completions). Without their recommends, which bring a desktop's worth.
if [ "$purpose" = test ]; then
  extra=()
  for p in chromium chromium-driver prometheus mandoc zsh python3-pip systemd; do
    dpkg -s "$p" >/dev/null 2>&1 || extra+=("$p")
  done
  if [ ${#extra[@]} -gt 0 ]; then
    echo "setup: installing ${extra[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${extra[@]}" >/dev/null
  fi
  # Selenium from PyPI (Debian's pip refuses the system interpreter without the flag).
  if ! python3 -c "import selenium" 2>/dev/null; then
    echo "setup: installing selenium (pip)"
    python3 -m pip install -q --break-system-packages selenium >/dev/null
  fi
fi

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "setup: add /opt/swift/usr/bin to PATH" >&2
  else
    echo "setup: no Swift toolchain found; install Swift 6 first (https://www.swift.org/install/linux/)" >&2
  fi
  exit 1
fi
