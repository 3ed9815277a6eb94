#!/usr/bin/env bash
# HTTP lookups under load: p50/p99 latency and requests/s at 200 concurrent clients.
#
# Run: benches/http_lookup.sh [seconds]   (needs wrk: apt-get install wrk)
#
# Starts the release build of `amtsbote serve` on a free loopback port with a fresh data
# directory (the sample directory answers), then drives it with wrk (2 threads, 200
# connections) — first against an unknown route (the floor: HTTP handling alone, the
# baseline of the same run), then against GET /api/v1/zustaendigkeit. Server and load
# generator share this machine's cores; the figures say what one box sustains end to end.
# Every request carries an operator's bearer token (made with `amtsbote token create`), so
# the figures include looking the token up in the ledger.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --release --quiet
data="$(mktemp -d)"
token=$(AMTSBOTE_DATA_DIR="$data" AMTSBOTE_LOG=warn target/release/amtsbote token create --role operator --name bench 2>/dev/null)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AMTSBOTE_DATA_DIR="$data" AMTSBOTE_HTTP_LISTEN="127.0.0.1:$port" AMTSBOTE_LOG=warn \
  target/release/amtsbote serve >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

run() { # name url
  local out; out=$(wrk -t2 -c200 -d"${secs}s" --latency -H "Authorization: Bearer $token" "$2")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-46s %12s %10s %10s\n' "$1" "$rps" "$p50" "$p99"
}
echo "HTTP lookups, wrk -t2 -c200 -d${secs}s against amtsbote serve (release) on 127.0.0.1, 2 cores shared"
printf '%-46s %12s %10s %10s\n' "endpoint" "requests/s" "p50" "p99"
run "baseline: unknown route (404, no work)" "http://127.0.0.1:$port/nothing-here"
run "GET /api/v1/zustaendigkeit (street+PLZ+Ort)" "http://127.0.0.1:$port/api/v1/zustaendigkeit?plz=50667&ort=K%C3%B6ln&strasse=Hohe%20Str.%2012&einnahmeart=GRST"
run "GET /api/v1/zustaendigkeit (not found)" "http://127.0.0.1:$port/api/v1/zustaendigkeit?plz=99999&ort=Nirgendwo"
