#!/usr/bin/env bash
# One stream to many players, side by side in one run: livesnap (release build, [play] on,
# no snapshot rule) and nginx-rtmp (`live on;`, one worker), each fed one real-time looped
# 1080p publish by livesnap-load, which is also the player fleet (`--players N`, the
# library's RTMP client over TCP, not N ffmpeg processes).
#
# For each server and rep:
#   t = 0                 server up, livesnap-load publishes one stream
#   t = 3 .. 9            CPU with the publish alone; RSS at t = 9 (0 players)
#   t = 9 .. DELAY-1      one probe player (a second livesnap-load); RSS at DELAY-1: the
#                         server now keeps its shared window of frames for players
#                         (livesnap: [play] player_queue_bytes, 4 MiB ≈ 8 s at 4 Mbit/s)
#   t = DELAY .. +RAMP    N players connect, evenly spread
#   after WARMUP more     CPU window of WINDOW s (utime+stime of the server's process tree,
#                         from /proc/PID/stat), RSS at its end (N players)
# Memory per player = (RSS_N - RSS_0) / N, and beyond the shared window (RSS_N - RSS_1) / (N - 1).
# livesnap-load reports players connected, closed
# early, messages per player and the publisher→player lag of each video frame (p50/p99).
#
# Usage:
#   benches/players.sh [--players 200] [--window 60] [--warmup 10] [--reps 1]
#                      [--servers "livesnap nginx"] [--fixture FILE.flv] [--load-threads 1]
#                      [--out DIR] [--no-install] [--no-build]
#                      [--livesnap-bin PATH]   # measure another livesnap build (implies --no-build)
# Without --fixture, the 60 s 1080p30 High 4 Mbit/s file of compare.sh is made in OUT.
# Ports 19450 (livesnap RTMP), 19451 (livesnap HTTP), 19452 (nginx), 127.0.0.1 only.
# Everything started is stopped by its PID on exit, also on Ctrl-C. Results: OUT/results.tsv
# and a table on stdout.
set -euo pipefail

main() {

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PLAYERS=200
WINDOW=60
WARMUP=10
DELAY=22
RAMP=5
REPS=1
SERVERS="livesnap nginx"
FIXTURE=""
LOAD_THREADS=1
OUT=/tmp/livesnap-players
INSTALL=1
BUILD=1
SNAP_BIN=""
SNAP_PORT=19450
HTTP_PORT=19451
NGINX_PORT=19452
TCK=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$ROOT/benches/support/setup.sh" # install_missing, release_bins, make_fixture

while [ $# -gt 0 ]; do
  case $1 in
    --players) PLAYERS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --fixture) FIXTURE=$2; shift 2 ;;
    --load-threads) LOAD_THREADS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --livesnap-bin) SNAP_BIN=$2; BUILD=0; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT/bin"

# --- what it needs ---------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then install_missing; fi
release_bins "$ROOT" "$OUT" "$BUILD" "$SNAP_BIN" ""
SNAP="$OUT/bin/livesnap"
LOAD="$OUT/bin/livesnap-load"

if [ -z "$FIXTURE" ]; then
  make_fixture "$OUT" high_1920x1080_4M 1920x1080 high 4M 60
  FIXTURE="$OUT/high_1920x1080_4M.flv"
fi

# --- process bookkeeping (benches/support/proc.sh) --------------------------------------------------
. "$ROOT/benches/support/proc.sh" # STARTED, cleanup traps, tree_pids, cpu_ticks, rss_kb, nap, …

wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

write_livesnap_conf() { # FILE DIR
  cat >"$1" <<EOF
[server]
rtmp_listen = "127.0.0.1:$SNAP_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
[limits]
max_connections = 4096
max_connections_per_ip = 4096
[snapshot]
workers = 0
[storage.default]
scheme = "fs"
root = "$2/snaps"
[log]
filter = "warn"
[play]
enabled = true
max_players_per_stream = 4096
max_players = 4096
EOF
}

write_nginx_conf() { # FILE PREFIX
  cat >"$1" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes 1;
user root;
pid $2/nginx.pid;
error_log $2/error.log warn;
events { worker_connections 8192; }
rtmp {
  server {
    listen 127.0.0.1:$NGINX_PORT;
    chunk_size 4096;
    application live {
      live on;
      record off;
    }
  }
}
EOF
}

run_one() { # SERVER REP
  local srv=$1 rep=$2 dir="$OUT/run/$1-r$2" url server_pid
  rm -rf "$dir"; mkdir -p "$dir"
  case $srv in
    livesnap)
      write_livesnap_conf "$dir/livesnap.toml" "$dir"
      "$SNAP" serve --config "$dir/livesnap.toml" >"$dir/server.log" 2>&1 &
      server_pid=$!
      url="rtmp://127.0.0.1:$SNAP_PORT/live"
      STARTED+=("$server_pid")
      wait_port "$SNAP_PORT" ;;
    nginx)
      mkdir -p "$dir/nginx/logs"
      write_nginx_conf "$dir/nginx.conf" "$dir/nginx"
      nginx -p "$dir/nginx" -c "$dir/nginx.conf" >"$dir/server.log" 2>&1 &
      server_pid=$!
      url="rtmp://127.0.0.1:$NGINX_PORT/live"
      STARTED+=("$server_pid")
      wait_port "$NGINX_PORT" ;;
    *) echo "unknown server $srv" >&2; return 1 ;;
  esac
  sleep 1
  local duration=$((DELAY + RAMP + WARMUP + WINDOW + 5))
  local t0
  t0=$(date +%s.%N)
  "$LOAD" --url "$url" --streams 1 --fixture "$FIXTURE" --duration "$duration" --metrics "" \
    --prefix s --players "$PLAYERS" --players-delay "$DELAY" --players-ramp "$RAMP" \
    --threads "$LOAD_THREADS" >"$dir/load.log" 2>&1 &
  local load_pid=$!
  STARTED+=("$load_pid")
  # Publish alone.
  sleep_until "$t0" 3
  local a0 at0 a1 at1 rss0 rss1
  a0=$(cpu_ticks "$server_pid"); at0=$(date +%s.%N)
  sleep_until "$t0" 9
  a1=$(cpu_ticks "$server_pid"); at1=$(date +%s.%N)
  rss0=$(rss_kb "$server_pid")
  # One probe player, until the N players are all in.
  "$LOAD" --url "$url" --streams 0 --fixture "$FIXTURE" --duration $((DELAY + RAMP - 9)) \
    --metrics "" --players 1 --players-delay 0 --players-ramp 0 --play-url "$url/s0" --quiet \
    >"$dir/probe.log" 2>&1 &
  STARTED+=("$!")
  sleep_until "$t0" $((DELAY - 1))
  rss1=$(rss_kb "$server_pid")
  # With the players.
  sleep_until "$t0" $((DELAY + RAMP + WARMUP))
  local c0 ct0 c1 ct1 rssn l0 l1
  c0=$(cpu_ticks "$server_pid"); ct0=$(date +%s.%N); l0=$(cpu_ticks "$load_pid")
  nap "$WINDOW"
  c1=$(cpu_ticks "$server_pid"); ct1=$(date +%s.%N); l1=$(cpu_ticks "$load_pid")
  rssn=$(rss_kb "$server_pid")
  wait "$load_pid" || true
  stop_tree "$server_pid"
  local summary p50 p99 connected early
  summary=$(grep -E '^players:' "$dir/load.log" || echo "players: (none)")
  p50=$(sed -nE 's/.*frame lag p50=([0-9.]+) ms.*/\1/p' <<<"$summary")
  p99=$(sed -nE 's/.*frame lag .*p99=([0-9.]+) ms.*/\1/p' <<<"$summary")
  connected=$(sed -nE 's/^players: ([0-9]+) of.*/\1/p' <<<"$summary")
  early=$(sed -nE 's/.*failed=([0-9]+) closed_early=([0-9]+).*/\1+\2/p' <<<"$summary")
  awk -v srv="$srv" -v rep="$rep" -v n="$PLAYERS" -v tck="$TCK" \
      -v a0="$a0" -v a1="$a1" -v at0="$at0" -v at1="$at1" \
      -v c0="$c0" -v c1="$c1" -v ct0="$ct0" -v ct1="$ct1" -v l0="$l0" -v l1="$l1" \
      -v rss0="$rss0" -v rss1="$rss1" -v rssn="$rssn" -v p50="${p50:-nan}" -v p99="${p99:-nan}" \
      -v connected="${connected:-0}" -v early="${early:-?}" \
      -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    cpu0 = (a1 - a0) / tck / (at1 - at0); cpun = (c1 - c0) / tck / (ct1 - ct0)
    lcpu = (l1 - l0) / tck / (ct1 - ct0)
    printf "%s\t%d\t%d\t%d\t%s\t%.3f\t%.3f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%.3f\t%s\n",
      srv, rep, n, connected, early, cpu0, cpun, rss0 / 1024, rss1 / 1024, rssn / 1024,
      (rssn - rss0) / n, (rssn - rss1) / (n > 1 ? n - 1 : 1), p50, p99, lcpu, load
  }' >>"$OUT/results.tsv"
  log "$srv r$rep: $(tail -1 "$OUT/results.tsv" | cut -f4-16)"
}

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), livesnap tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "# fixture $FIXTURE, $PLAYERS players from t=${DELAY}s over ${RAMP}s, window ${WINDOW}s after ${WARMUP}s warm-up"
  printf 'server\trep\tplayers\tconnected\tfailed+early\tcores_0\tcores_n\trss0_mb\trss1_mb\trssn_mb\tkib_per_player\tkib_per_player_beyond_window\tlag_p50_ms\tlag_p99_ms\tload_gen_cores\tloadavg\n'
} >>"$OUT/results.tsv"
log "results: $OUT/results.tsv"
for rep in $(seq "$REPS"); do
  for srv in $SERVERS; do
    run_one "$srv" "$rep"
  done
done

echo
echo "One stream to $PLAYERS players ($(nproc) cores, load now $(cut -d' ' -f1-3 /proc/loadavg)); cores = server CPU seconds per second"
awk -F'\t' '
  /^#/ || $1 == "server" { next }
  { printf "%-9s r%-2s players %s/%s lost %-4s | cores: publish only %.3f, with players %.3f | RSS 0/1/N players %.1f/%.1f/%.1f MB: %.1f KiB/player, %.1f beyond the shared window | lag p50 %s ms p99 %s ms | load gen %.2f cores, loadavg %s\n",
      $1, $2, $4, $3, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 }' "$OUT/results.tsv" | tail -n $((REPS * $(wc -w <<<"$SERVERS")))
}

main "$@"
