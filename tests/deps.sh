#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine with Rust:
# redis-server (+ redis-tools), PostgreSQL 15 server binaries, MariaDB (mariadb-server, with mysqlbinlog:
# the MySQL source's tests and bench), curl, python3 (+ venv), node + npm, the
# wasm32-wasip2 Rust target, the Python clients of the ingest tests
# (tests/python/venv.sh), and the Python and JavaScript guest toolchains of
# examples/python-module and examples/js-module (componentize-py from PyPI in a
# venv, componentize-js from npm with the example's package-lock.json), all
# under $SWITCHYARD_TOOLS_DIR (default ~/.cache/switchyard-tools), outside the
# clone, so a machine installs each pinned version once; and
# chromium + chromium-driver (tests/it/console.rs drives the web console in
# headless Chromium over WebDriver).
# Idempotent; quiet when everything is present.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ! -x /usr/lib/postgresql/15/bin/postgres ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  missing+=(postgresql)
fi
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mysqlbinlog >/dev/null 2>&1 || missing+=(mariadb-server)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$' || rustup target add wasm32-wasip2 >&2
fi

# The real client libraries the ingest compatibility tests drive (CloudEvents
# SDK, segment-analytics-python), pinned in tests/python/requirements.txt, in a
# venv under $SWITCHYARD_TOOLS_DIR (default ~/.cache/switchyard-tools). The
# tests run the same script, so it is a no-op there once this ran.
bash "$(dirname "$0")/python/venv.sh" >/dev/null

# Guest toolchains for the Python and JavaScript example modules. Versions are
# pinned here (componentize-py) and in examples/js-module/package-lock.json;
# a new pin installs next to the old one.
tools="${SWITCHYARD_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools}"
root="$(cd "$(dirname "$0")/.." && pwd)"
componentize_py_version=0.25.1
venv="$tools/componentize-py-$componentize_py_version"
if [ ! -x "$venv/bin/componentize-py" ]; then
  echo "installing componentize-py $componentize_py_version into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "componentize-py==$componentize_py_version" >&2
fi
js="$root/examples/js-module"
js_tools="$tools/componentize-js-$(sha256sum "$js/package-lock.json" | cut -c1-12)"
if [ ! -x "$js_tools/node_modules/.bin/componentize-js" ]; then
  echo "installing componentize-js (examples/js-module/package-lock.json) into $js_tools" >&2
  rm -rf "$js_tools"
  mkdir -p "$js_tools"
  cp "$js/package.json" "$js/package-lock.json" "$js_tools/"
  (cd "$js_tools" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
