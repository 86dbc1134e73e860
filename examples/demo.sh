#!/usr/bin/env bash
# End-to-end demo on the example config (config/switchyard.toml):
#   - installs redis-server if missing and starts a private one on a free port
#     (unless SWITCHYARD_REDIS_URL points at a Redis you already run),
#   - builds and starts the router,
#   - posts a sample event and shows where it landed in the log.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
echo "== building switchyard and the transform modules" >&2
cargo build -p switchyard --locked 2>&1 | tail -1 >&2
bash transforms/build.sh --locked 2>&1 | tail -1 >&2
BIN=target/debug/switchyard

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { "$BIN" --version >/dev/null; local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done; }

if [ -z "${SWITCHYARD_REDIS_URL:-}" ]; then
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
  PIDS+=($!)
  export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$RPORT"
  for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== started a private redis-server at $SWITCHYARD_REDIS_URL" >&2
fi

SPORT=$(free_port)
"$BIN" sink --listen "127.0.0.1:$SPORT" > "$WORK/sink.out" 2>/dev/null &
PIDS+=($!)
export ESP_URL="http://127.0.0.1:$SPORT/events"
echo "== started a local sink standing in for the ESP at $ESP_URL" >&2

export SWITCHYARD_WEB_TOKEN=${SWITCHYARD_WEB_TOKEN:-demo-token-$(date +%s)-0123456789}
export SWITCHYARD_LISTEN=127.0.0.1:0
export SWITCHYARD_LOG_FORMAT=json
"$BIN" check --config config/switchyard.toml >&2
"$BIN" run --config config/switchyard.toml 2> "$WORK/router.log" &
PIDS+=($!)
ADDR=""
# First start compiles the modules (cached afterwards): allow up to 2 minutes.
# The listener is up at once (/healthz 200, /readyz 503); `ready` is logged
# when the modules are loaded and delivery runs.
for _ in $(seq 1200); do
  ADDR=$(grep -o '"message":"ready","addr":"[^"]*"' "$WORK/router.log" 2>/dev/null | sed 's/.*"addr":"\([^"]*\)"/\1/' || true)
  [ -n "$ADDR" ] && break; sleep 0.1
done
[ -n "$ADDR" ] || { echo "router did not start:"; cat "$WORK/router.log"; exit 1; }
echo "== router listening on http://$ADDR" >&2

echo "== POST /v1/events (examples/events/email_changed.json)" >&2
curl -sS -X POST "http://$ADDR/v1/events" \
  -H "Authorization: Bearer $SWITCHYARD_WEB_TOKEN" -H 'Content-Type: application/json' \
  -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
  --data @examples/events/email_changed.json
echo
echo "== the event in the log (switchyard tail --account 42 --from earliest)" >&2
"$BIN" tail --config config/switchyard.toml --account 42 --from earliest --no-follow
echo "== what the consumer \"esp\" delivered (filter -> redact -> webhook chain; switchyard sink output)" >&2
for _ in $(seq 50); do [ -s "$WORK/sink.out" ] && break; sleep 0.1; done
cat "$WORK/sink.out"
echo "== consumer status (switchyard status)" >&2
"$BIN" status --config config/switchyard.toml
echo "== done" >&2
