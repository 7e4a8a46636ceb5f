#!/usr/bin/env bash
# Scale probe: one livesnap (a rule every 5 s, fs storage in a temp folder, 2 pool workers)
# and N publishes of one fixture from livesnap-load, on loopback. Prints the server's CPU
# over the steady part (after the ramp), its RSS at the end, the slowest of the admin API
# answers sampled every 5 s (`/api/v1/streams`), and livesnap-load's final line: snapshots
# due / taken / dropped / failed and how many were stored more than 1 s after their
# keyframe arrived (from livesnap_snapshot_latency_seconds).
#
# Usage:
#   benches/scale.sh --streams 200 --fixture FILE.flv [--ramp 40] [--duration 120]
#                    [--bin target/release] [--workers 2] [--out DIR]
# Build first: cargo build --release --bins. Ports 29350 (RTMP) and 28935 (HTTP).
set -euo pipefail

main() {
  local n=10 fixture="" ramp=20 duration=120 bin=target/release workers=2 out=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --streams) n=$2; shift 2 ;;
      --fixture) fixture=$2; shift 2 ;;
      --ramp) ramp=$2; shift 2 ;;
      --duration) duration=$2; shift 2 ;;
      --bin) bin=$2; shift 2 ;;
      --workers) workers=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
  done
  [ -n "$fixture" ] || { echo "--fixture FILE.flv is required" >&2; exit 2; }
  out=${out:-$(mktemp -d /tmp/livesnap-scale.XXXXXX)}
  mkdir -p "$out"
  cat > "$out/livesnap.toml" <<EOF
[server]
rtmp_listen = "127.0.0.1:29350"
http_listen = "127.0.0.1:28935"
[limits]
max_connections = $((n + 64))
max_connections_per_ip = $((n + 64))
[snapshot]
workers = $workers
[storage.default]
scheme = "fs"
root = "$out/snapshots"
[log]
filter = "warn"
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{Sequence}.jpg"
EOF
  "$bin/livesnap" serve --config "$out/livesnap.toml" > "$out/server.log" 2>&1 &
  local server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  sleep 1
  local idle_rss
  idle_rss=$(awk '/VmRSS/{print $2}' "/proc/$server/status")
  "$bin/livesnap-load" --url rtmp://127.0.0.1:29350/live --streams "$n" --fixture "$fixture" \
    --duration "$duration" --ramp "$ramp" --metrics http://127.0.0.1:28935/metrics --quiet \
    > "$out/load.log" 2>&1 &
  local load=$!
  ticks() { local s; s=$(cat "/proc/$server/stat"); s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
  sleep $((ramp + 5))
  local c0 t0 slowest=0
  c0=$(ticks); t0=$(date +%s.%N)
  local steady=$((duration - ramp - 15))
  local end=$(( $(date +%s) + steady ))
  while [ "$(date +%s)" -lt "$end" ]; do
    local t
    t=$(curl -s -o /dev/null -w '%{time_total}' http://127.0.0.1:28935/api/v1/streams || echo 99)
    slowest=$(awk -v a="$slowest" -v b="$t" 'BEGIN{print (b > a) ? b : a}')
    sleep 5
  done
  local c1 t1 rss
  c1=$(ticks); t1=$(date +%s.%N)
  rss=$(awk '/VmRSS/{print $2}' "/proc/$server/status")
  wait $load || true
  awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v n="$n" -v rss="$rss" -v idle="$idle_rss" -v api="$slowest" 'BEGIN{
    w = t1 - t0; cores = (b - a) / 100 / w
    printf "N=%d server CPU %.2f cores (%.1f s/stream-h), RSS %d MB (%.2f MB/stream above idle), slowest /api/v1/streams %.3f s\n",
      n, cores, cores * 3600 / n, rss / 1024, (rss - idle) / 1024 / n, api }'
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  grep -E '^(done|final):' "$out/load.log" || tail -5 "$out/load.log"
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  trap - EXIT
}

main "$@"
