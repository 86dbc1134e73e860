#!/usr/bin/env bash
# The privacy scenario in one command (issue 15, seed 001 §7-§8):
#   - an email change reaches the ESP; the SMS provider receives no email;
#   - SMS consent is revoked: later SMS sends are filtered, including ones already in the log;
#   - an EU member with unknown consent: nothing reaches the ad platform; a California member's
#     events do, with the email hashed;
#   - `switchyard policy test` explains one decision; `switchyard audit` shows where each went.
# Starts a private redis-server on a free port (unless SWITCHYARD_REDIS_URL is set) and three
# `switchyard sink`s standing in for the vendors.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=examples/privacy

bash tests/deps.sh
echo "== building switchyard" >&2
cargo build -p switchyard --locked 2>&1 | tail -1 >&2
BIN=target/debug/switchyard

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done; }

if [ -z "${SWITCHYARD_REDIS_URL:-}" ]; then
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
  PIDS+=($!)
  export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$RPORT"
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

for v in esp sms ads; do
  port=$(free_port)
  "$BIN" sink --listen "127.0.0.1:$port" > "$WORK/$v.out" 2>/dev/null &
  PIDS+=($!)
  export "$(echo $v | tr a-z A-Z)_URL=http://127.0.0.1:$port/"
done

export SWITCHYARD_WEB_TOKEN=privacy-demo-token-0123456789
export SWITCHYARD_LISTEN=127.0.0.1:0
export SWITCHYARD_LOG_FORMAT=json SWITCHYARD_LOG=trace
"$BIN" check --config $HERE/privacy.toml >&2
"$BIN" run --config $HERE/privacy.toml 2> "$WORK/router.log" &
PIDS+=($!)
ADDR=""
for _ in $(seq 600); do
  ADDR=$(grep -o '"message":"ready","addr":"[^"]*"' "$WORK/router.log" 2>/dev/null | sed 's/.*"addr":"\([^"]*\)"/\1/' || true)
  [ -n "$ADDR" ] && break; sleep 0.1
done
[ -n "$ADDR" ] || { echo "router did not start:"; cat "$WORK/router.log"; exit 1; }

echo "== POST $HERE/events.json" >&2
curl -sS -X POST "http://$ADDR/v1/events" -H "Authorization: Bearer $SWITCHYARD_WEB_TOKEN" \
  -H 'Content-Type: application/json' --data @$HERE/events.json; echo
for _ in $(seq 100); do
  n=$("$BIN" audit --config $HERE/privacy.toml --account m1 --json | grep -c '"consumer":"sms"' || true)
  [ "$n" -ge 4 ] && break; sleep 0.1
done
sleep 0.5
for v in esp sms ads; do
  echo "== what \"$v\" received (event id: data)" >&2
  python3 -c 'import json,sys
for l in sys.stdin:
    b=json.loads(l)["body"]; print(" ", b["id"], json.dumps(b.get("data")))' < "$WORK/$v.out"
done
echo "== switchyard audit --account m1" >&2
"$BIN" audit --config $HERE/privacy.toml --account m1
echo "== switchyard audit --account eu-member" >&2
"$BIN" audit --config $HERE/privacy.toml --account eu-member
echo "== switchyard policy test --consumer sms --event $HERE/event.json --consent sms=granted" >&2
"$BIN" policy test --config $HERE/privacy.toml --consumer sms --event $HERE/event.json --consent sms=granted || true
echo "== the router's trace log holds no email or phone number:" >&2
if grep -Eiq 'example\.com|415 555|4155550134' "$WORK/router.log"; then
  echo "FOUND PII in the log"; exit 1
else
  echo "  none found in $(wc -l < "$WORK/router.log") log lines"
fi
