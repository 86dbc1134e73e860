#!/usr/bin/env bash
# The cross-banner scenario in one command (issue 18):
#   bash examples/cross-banner/run.sh
# Starts a private Redis, a sink standing in for the parent-level system and the router with
# examples/cross-banner/switchyard.toml; posts Ada to banner-a, Bob to banner-a, Ada (another
# spelling of her email) to banner-b, then Ada's tier change in banner-a; prints what the
# consumer subscribed to customer.parent.* received: one cross_banner_merged event with both
# banners' account ids, then the mirrored tier_changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash tests/deps.sh >&2
# SWITCHYARD_BIN: use that binary (and the modules already in transforms/target) instead of building.
if [ -z "${SWITCHYARD_BIN:-}" ]; then
  echo "== building switchyard and the transform modules" >&2
  cargo build -p switchyard --locked 2>&1 | tail -1 >&2
  bash transforms/build.sh --locked 2>&1 | tail -1 >&2
fi
BIN=${SWITCHYARD_BIN:-$PWD/target/debug/switchyard}
CONFIG=examples/cross-banner/switchyard.toml

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { local p; while :; do p=$((20000 + RANDOM % 20000)); (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }; done; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$RPORT"
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

SPORT=$(free_port)
"$BIN" sink --listen "127.0.0.1:$SPORT" > "$WORK/parent.out" 2>/dev/null &
PIDS+=($!)
export PARENT_URL="http://127.0.0.1:$SPORT/parent"

export SWITCHYARD_WEB_TOKEN=cross-banner-token-$(date +%s)-0123456789
export SWITCHYARD_LOG_FORMAT=json
"$BIN" check --config "$CONFIG" >&2
"$BIN" run --config "$CONFIG" 2> "$WORK/router.log" &
PIDS+=($!)
ADDR=""
for _ in $(seq 1200); do
  ADDR=$(grep -o '"message":"ready","addr":"[^"]*"' "$WORK/router.log" 2>/dev/null | sed 's/.*"addr":"\([^"]*\)"/\1/' || true)
  [ -n "$ADDR" ] && break; sleep 0.1
done
[ -n "$ADDR" ] || { echo "router did not start:"; cat "$WORK/router.log"; exit 1; }
echo "== router ready on http://$ADDR" >&2

post() {
  echo "== POST $1" >&2
  curl -sS -X POST "http://$ADDR/v1/events" -H "Authorization: Bearer $SWITCHYARD_WEB_TOKEN" \
    -H 'Content-Type: application/json' --data "$1" >&2
  echo >&2
}
post '{"id": "a-1", "topic": "created", "account_id": "A-17", "attributes": {"banner": "banner-a"}, "data": {"email": "Ada@Example.com ", "tier": "silver"}}'
post '{"id": "a-2", "topic": "created", "account_id": "A-99", "attributes": {"banner": "banner-a"}, "data": {"email": "bob@example.com", "tier": "bronze"}}'
sleep 1
post '{"id": "b-1", "topic": "created", "account_id": "B-3", "attributes": {"banner": "banner-b"}, "data": {"email": "ada@example.com", "tier": "gold"}}'
sleep 1
post '{"id": "a-3", "topic": "tier_changed", "account_id": "A-17", "attributes": {"banner": "banner-a"}, "data": {"email": "ada@example.com", "tier": "gold"}}'
echo "== an invalid banner is refused, naming the field" >&2
post '{"topic": "created", "account_id": "A-1", "attributes": {"banner": "banner a"}, "data": {"email": "x@example.com"}}'

# Wait for the merge and the mirror on the parent topic.
for _ in $(seq 300); do
  grep -q 'customer.parent.tier_changed' "$WORK/parent.out" 2>/dev/null && break; sleep 0.1
done
echo "== what the consumer of customer.parent.* received (switchyard sink output)" >&2
cat "$WORK/parent.out"
grep -q 'customer.parent.cross_banner_merged' "$WORK/parent.out" || { echo "no merge event"; cat "$WORK/router.log"; exit 1; }
grep -q 'customer.parent.tier_changed' "$WORK/parent.out" || { echo "no mirror event"; cat "$WORK/router.log"; exit 1; }
echo "== done: one merge event for Ada (banner-a A-17, banner-b B-3), then her tier change mirrored" >&2
