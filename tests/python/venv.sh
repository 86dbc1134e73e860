#!/usr/bin/env bash
# The Python venv of the ingest compatibility tests: the real CloudEvents SDK
# and Segment library, pinned in requirements.txt beside this script.
# Idempotent: installs only when the venv for this requirements.txt is
# missing, then prints the venv's python on stdout. Called by tests/deps.sh
# and by the tests themselves (tests/it/ingest_compat.rs), so
# `cargo test` alone works on a machine that ran neither.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools}"
venv="$tools/ingest-clients-$(sha256sum "$here/requirements.txt" | cut -c1-12)"
mkdir -p "$tools"
# One installer at a time (tests run in parallel, and so may two checkouts).
exec 9>"$tools/.ingest-clients.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "installing the ingest test clients (tests/python/requirements.txt) into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$here/requirements.txt" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
