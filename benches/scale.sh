#!/usr/bin/env bash
# Scale probe: one livesnap (a rule every 5 s, fs storage in a temp folder, 2 pool workers)
# and N publishes of one fixture from livesnap-load, on loopback. Prints the server's CPU
# over the steady part (after the ramp), its RSS at the end, the slowest of the admin API
# answers sampled every 5 s (`/api/v1/streams`), and livesnap-load's final line: snapshots
# due / taken / dropped / failed and how many were stored more than 1 s after their
# keyframe arrived (from livesnap_snapshot_latency_seconds).
#
# --outputs turns on the picture features of issue 13 (exact mode aside): output 0 (full
# JPEG, overwrite + sequence) plus a 320-px WebP output and a 160x90 `fit = "crop"` JPEG
# output; during the steady part every stream's `latest.jpg?width=320` is fetched three
# times (the picture cache) and one `storyboard.vtt` + `storyboard.jpg` once, their HTTP
# codes counted on the line after the RSS.
#
# Usage:
#   benches/scale.sh --streams 200 --fixture FILE.flv [--ramp 40] [--duration 120]
#                    [--bin target/release] [--workers 2] [--out DIR] [--outputs]
# Build first: cargo build --release --bins. Ports 29350 (RTMP) and 28935 (HTTP).
set -euo pipefail

main() {
  local n=10 fixture="" ramp=20 duration=120 bin=target/release workers=2 out="" outputs=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --streams) n=$2; shift 2 ;;
      --fixture) fixture=$2; shift 2 ;;
      --ramp) ramp=$2; shift 2 ;;
      --duration) duration=$2; shift 2 ;;
      --bin) bin=$2; shift 2 ;;
      --workers) workers=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --outputs) outputs=1; shift ;;
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
  if [ "$outputs" = 1 ]; then
    cat >> "$out/livesnap.toml" <<EOF
[[rules.outputs]]
width = 320
format = "webp"
quality = 70
overwrite_object = "{AppName}/{StreamName}/thumb.webp"
sequence_object = "{AppName}/{StreamName}/thumb/{Sequence}.webp"
[[rules.outputs]]
width = 160
height = 90
fit = "crop"
overwrite_object = "{AppName}/{StreamName}/tile.jpg"
sequence_object = "{AppName}/{StreamName}/tile/{Sequence}.jpg"
EOF
  fi
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
  local c0 t0 slowest=0 round=0 pictures="" board=""
  c0=$(ticks); t0=$(date +%s.%N)
  local steady=$((duration - ramp - 15))
  local end=$(( $(date +%s) + steady ))
  while [ "$(date +%s)" -lt "$end" ]; do
    local t
    t=$(curl -s -o /dev/null -w '%{time_total}' http://127.0.0.1:28935/api/v1/streams || echo 99)
    slowest=$(awk -v a="$slowest" -v b="$t" 'BEGIN{print (b > a) ? b : a}')
    round=$((round + 1))
    if [ "$outputs" = 1 ] && [ "$round" -ge 2 ] && [ "$round" -le 4 ]; then
      pictures="$pictures $(poll_latest)"
    fi
    if [ "$outputs" = 1 ] && [ "$round" = 4 ]; then board=$(storyboard); fi
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
  if [ "$outputs" = 1 ]; then
    echo "latest.jpg?width=320 codes:$(echo "$pictures" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{printf " %s×%s", $2, $1}'); storyboard.vtt, .jpg: $board"
    echo "stored objects: $(find "$out/snapshots" -name '*.jpg' | wc -l) .jpg, $(find "$out/snapshots" -name '*.webp' | wc -l) .webp"
  fi
  grep -E '^(done|final):' "$out/load.log" || tail -5 "$out/load.log"
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
  trap - EXIT
}

# One GET of `latest.jpg?width=320` for every live stream (one curl, one connection); prints
# the HTTP codes.
poll_latest() {
  local api=http://127.0.0.1:28935/api/v1/streams
  curl -s "$api" | jq -r '.items[] | "url = \"'"$api"'/\(.domain)/\(.app)/\(.stream)/latest.jpg?width=320\"\noutput = \"/dev/null\""' \
    > "$out/latest.curl"
  curl -s -K "$out/latest.curl" -w '%{http_code} ' || true
}

# The storyboard of the first live stream over the last hour: `storyboard.vtt` then
# `storyboard.jpg`; prints both HTTP codes and the VTT's cue count.
storyboard() {
  local api=http://127.0.0.1:28935/api/v1/streams path q
  path=$(curl -s "$api" | jq -r '.items[0] | "\(.domain)/\(.app)/\(.stream)"')
  q="start_time=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)&end_time=$(date -u -d '+1 minute' +%Y-%m-%dT%H:%M:%SZ)&tile=160x90&columns=10"
  local v j cues
  v=$(curl -s -o "$out/storyboard.vtt" -w '%{http_code}' "$api/$path/storyboard.vtt?$q" || echo 000)
  j=$(curl -s -o "$out/storyboard.jpg" -w '%{http_code}' "$api/$path/storyboard.jpg?$q" || echo 000)
  cues=$(grep -c -- '-->' "$out/storyboard.vtt" || true)
  echo "$v ($cues cues), $j ($(stat -c %s "$out/storyboard.jpg" 2>/dev/null || echo 0) B)"
}

main "$@"
