#!/usr/bin/env bash
# The operator's kit, checked: the man page (generated from the ArgumentParser commands, linted by mandoc),
# the shell completions (bash -n, zsh -n), and contrib/popgate.service (systemd-analyze verify, with the built
# binary in place of /usr/local/bin/popgate and the generated man page where `man` finds it).
#   scripts/check-kit.sh [OUTPUT-DIR]   (the man page and completions are left there; default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out/man/man1" "$out/completions"
bin=$(swift build --show-bin-path)
[ -x "$bin/popgate" ] || swift build --product popgate

echo "== man page (swift package generate-manual)"
swift package --allow-writing-to-package-directory generate-manual --configuration debug >"$out/generate.log" 2>&1 \
  || { cat "$out/generate.log"; exit 1; }
cp .build/plugins/GenerateManual/outputs/popgate/popgate.1 "$out/man/man1/"
# The generator's own style (paragraph macros before list items, long lines) is warned about; errors fail.
mandoc -Tlint -W error "$out/man/man1/popgate.1"
for section in SYNOPSIS DESCRIPTION; do
  grep -q "^\.Sh $section" "$out/man/man1/popgate.1" || { echo "the man page has no $section"; exit 1; }
done
grep -q -- "--http" "$out/man/man1/popgate.1" || { echo "the man page lacks serve --http"; exit 1; }
echo "ok: $out/man/man1/popgate.1"

echo "== completions"
"$bin/popgate" --generate-completion-script bash >"$out/completions/popgate.bash"
"$bin/popgate" --generate-completion-script zsh >"$out/completions/_popgate"
"$bin/popgate" --generate-completion-script fish >"$out/completions/popgate.fish"
bash -n "$out/completions/popgate.bash"
zsh -n "$out/completions/_popgate"
grep -q -- "--http-token" "$out/completions/popgate.bash" || { echo "the bash completion lacks --http-token"; exit 1; }
echo "ok: bash and zsh read them"

echo "== systemd unit"
sed "s#/usr/local/bin/popgate#$bin/popgate#" contrib/popgate.service >"$out/popgate.service"
# It only warns of an unknown or misspelt setting: anything it says fails the check.
said=$(MANPATH="$out/man" systemd-analyze verify "$out/popgate.service" 2>&1) || { echo "$said"; exit 1; }
[ -z "$said" ] || { echo "$said"; exit 1; }
echo "ok: systemd-analyze verify contrib/popgate.service"
