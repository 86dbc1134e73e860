#!/usr/bin/env bash
# Build app.py (+ logic.py) into build/{{name}}.wasm with componentize-py {{cpy_version}}.
# componentize-py: $COMPONENTIZE_PY, else the copy Switchyard's tests/deps.sh
# installs (~/.cache/switchyard-tools), else the one on PATH
# (pip install componentize-py=={{cpy_version}}).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version={{cpy_version}}
tools="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools}"
cpy="${COMPONENTIZE_PY:-}"
if [ -z "$cpy" ]; then
  if [ -x "$tools/componentize-py-$version/bin/componentize-py" ]; then
    cpy="$tools/componentize-py-$version/bin/componentize-py"
  elif command -v componentize-py >/dev/null 2>&1; then
    cpy="$(command -v componentize-py)"
  else
    echo "componentize-py not found: pip install componentize-py==$version" >&2
    exit 1
  fi
fi
mkdir -p "$here/build"
# Work from a scratch copy: componentize-py leaves a __pycache__ behind.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp "$here/app.py" "$here/logic.py" "$src/"
(cd "$src" && "$cpy" -d "$here/wit" -w transformer componentize app -o "$here/build/{{name}}.wasm" >/dev/null)
echo "built $here/build/{{name}}.wasm"
