#!/usr/bin/env bash
# Build the Python transform (app.py) into a WebAssembly component:
#   examples/python-module/build/klaviyo_py.wasm
# with componentize-py (the version tests/deps.sh installs). Callable from
# anywhere. Skips the build when the output is newer than app.py, the WIT
# and this script (FORCE=1 rebuilds).
#
# componentize-py: $COMPONENTIZE_PY if set, else the venv tests/deps.sh made
# ($SWITCHYARD_TOOLS_DIR, default ~/.cache/switchyard-tools), else the one
# on PATH (pip install componentize-py==0.25.1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/build/klaviyo_py.wasm"
version=0.25.1

if [ "${FORCE:-}" != 1 ] && [ -f "$out" ] &&
  [ -z "$(find "$here/app.py" "$here/build.sh" "$root/wit/v0.1" -newer "$out" -print -quit)" ]; then
  exit 0
fi

tools="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools}"
cpy="${COMPONENTIZE_PY:-}"
if [ -z "$cpy" ]; then
  if [ -x "$tools/componentize-py-$version/bin/componentize-py" ]; then
    cpy="$tools/componentize-py-$version/bin/componentize-py"
  elif command -v componentize-py >/dev/null 2>&1; then
    cpy="$(command -v componentize-py)"
  else
    echo "componentize-py not found: run tests/deps.sh (or pip install componentize-py==$version)" >&2
    exit 1
  fi
fi

mkdir -p "$here/build"
tmp="$(mktemp "$here/build/.klaviyo_py.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
# Work from a scratch copy of the sources: componentize-py leaves a
# __pycache__ next to the module it imports.
src="$(mktemp -d)"
trap 'rm -f "$tmp"; rm -rf "$src"' EXIT
cp "$here/app.py" "$src/"
(cd "$src" && "$cpy" -d "$root/wit/v0.1" -w transformer componentize app -o "$tmp" >/dev/null)
chmod 644 "$tmp"
mv -f "$tmp" "$out"
echo "built $out ($(du -h "$out" | cut -f1))" >&2
