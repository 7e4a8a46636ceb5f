#!/usr/bin/env bash
# Ingest + relay to one origin, side by side in one run: livesnap pushing every publish to
# the origin with a `[[relays]]` target, and an nginx-rtmp edge doing the same with `push`.
#
#   origin    nginx-rtmp (Debian's nginx + libnginx-mod-rtmp), `live on;`, one worker,
#             started afresh for every run; the same for both edges
#   livesnap  release build, no snapshot rule, [[relays]] target rtmp://ORIGIN/live/{StreamName}
#   nginx     nginx-rtmp edge, `live on; push rtmp://ORIGIN/live;`, one worker
#
# For each edge and each N (streams), livesnap-load publishes the fixture N times to the
# edge (real time, looped) and plays every stream back from the origin (`--play-from`, one
# player per stream), matching each video frame it receives from the origin with the moment
# it sent it to the edge (by timestamp): the added latency through the relay, end to end
# (the origin's hop and the load generator's own queueing included, the same for both
# edges). After the ramp and a warm-up, CPU seconds (utime + stime from /proc/PID/stat,
# summed over the process tree: nginx's master and worker) of the edge, of the origin and
# of the load generator are measured over a window; the edge's RSS at the end of the window
# minus the idle edge's, divided by N. Lag p50 / p99 / max are over the whole run.
#
# Usage:
#   benches/relay.sh [--streams "1 10 50"] [--window 60] [--warmup 15] [--reps 1]
#                    [--edges "livesnap nginx"] [--fixture FILE.flv] [--out DIR]
#                    [--no-install] [--no-build]
#                    [--livesnap-bin PATH]   # measure another livesnap build (implies --no-build)
#                    [--load-bin PATH]       # another livesnap-load (one with --play-from)
#                    [--variant NAME=PATH]   # any number of further builds (or wrapper scripts
#                                            # that exec one), measured as the edge
#                                            # "livesnap-NAME" (add it to --edges): before/after
#                                            # side by side in one run
#                    [--base-bin PATH]       # the same as --variant base=PATH
# Without --fixture, the 60 s 1080p30 High 4 Mbit/s 2 s GOP file (+ AAC) of compare.sh is
# made in OUT. Ports 19550 (origin), 19551 (livesnap RTMP), 19552 (livesnap HTTP), 19553
# (nginx edge), 127.0.0.1 only. Everything started is stopped by its PID on exit, also on
# Ctrl-C. Results: OUT/results.tsv (one line per run) and a table on stdout.
set -euo pipefail

# All of it in one function, called on the last line, so editing the file while it runs is
# harmless.
main() {

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STREAMS="1 10 50"
WINDOW=60
WARMUP=15
REPS=1
EDGES="livesnap nginx"
FIXTURE=""
OUT=/tmp/livesnap-relay
INSTALL=1
BUILD=1
SNAP_BIN=""
LOAD_BIN=""
VARIANTS=()
ORIGIN_PORT=19550
SNAP_PORT=19551
HTTP_PORT=19552
EDGE_PORT=19553
TCK=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
. "$ROOT/benches/support/setup.sh" # install_missing, release_bins, make_fixture

while [ $# -gt 0 ]; do
  case $1 in
    --streams) STREAMS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --edges) EDGES=$2; shift 2 ;;
    --fixture) FIXTURE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --livesnap-bin) SNAP_BIN=$2; BUILD=0; shift 2 ;;
    --load-bin) LOAD_BIN=$2; shift 2 ;;
    --base-bin) VARIANTS+=("base=$2"); shift 2 ;;
    --variant) VARIANTS+=("$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT/bin"

# --- what it needs ---------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then install_missing; fi
release_bins "$ROOT" "$OUT" "$BUILD" "$SNAP_BIN" "$LOAD_BIN"
SNAP="$OUT/bin/livesnap"
# Only the variants given now: a copy left in OUT/bin by an earlier run is never measured.
given=" "
for v in "${VARIANTS[@]}"; do
  cp "${v#*=}" "$OUT/bin/livesnap-${v%%=*}"
  given+="livesnap-${v%%=*} "
done
for e in $EDGES; do
  case $e in
    livesnap|nginx) ;;
    livesnap-*) [[ "$given" == *" $e "* ]] || { echo "edge $e needs --variant ${e#livesnap-}=PATH" >&2; exit 2; } ;;
    *) echo "unknown edge $e" >&2; exit 2 ;;
  esac
done
LOAD="$OUT/bin/livesnap-load"
# A target dir shared between worktrees may hold another tree's build of the load tool.
if ! "$LOAD" --help | grep -q -- --play-from; then
  echo "$LOAD has no --play-from: build this tree's livesnap-load (or pass --load-bin)" >&2
  exit 1
fi

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

# --- configurations --------------------------------------------------------------------------
write_nginx_conf() { # FILE PREFIX PORT EXTRA
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
    listen 127.0.0.1:$3;
    chunk_size 4096;
    application live {
      live on;
      record off;
      $4
    }
  }
}
EOF
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
[[relays]]
app = "live"
targets = ["rtmp://127.0.0.1:$ORIGIN_PORT/live/{StreamName}"]
EOF
}

start_nginx() { # DIR PORT EXTRA → PID on stdout
  mkdir -p "$1/logs"
  write_nginx_conf "$1/nginx.conf" "$1" "$2" "$3"
  nginx -p "$1" -c "$1/nginx.conf" >"$1/server.log" 2>&1 &
  echo $!
}

run_one() { # EDGE N REP
  local edge=$1 n=$2 rep=$3 dir="$OUT/run/$1-n$2-r$3" edge_pid origin_pid url
  rm -rf "$dir"; mkdir -p "$dir"
  origin_pid=$(start_nginx "$dir/origin" "$ORIGIN_PORT" "")
  STARTED+=("$origin_pid")
  wait_port "$ORIGIN_PORT"
  case $edge in
    livesnap|livesnap-*)
      write_livesnap_conf "$dir/livesnap.toml" "$dir"
      "$OUT/bin/$edge" serve --config "$dir/livesnap.toml" >"$dir/server.log" 2>&1 &
      edge_pid=$!
      STARTED+=("$edge_pid")
      url="rtmp://127.0.0.1:$SNAP_PORT/live"
      wait_port "$SNAP_PORT"; wait_port "$HTTP_PORT" ;;
    nginx)
      edge_pid=$(start_nginx "$dir/edge" "$EDGE_PORT" "push rtmp://127.0.0.1:$ORIGIN_PORT/live;")
      STARTED+=("$edge_pid")
      url="rtmp://127.0.0.1:$EDGE_PORT/live"
      wait_port "$EDGE_PORT" ;;
    *) echo "unknown edge $edge" >&2; return 1 ;;
  esac
  sleep 1
  local idle
  idle=$(rss_kb "$edge_pid")
  local ramp=$(( n >= 10 ? 10 : 1 ))
  local duration=$(( ramp + WARMUP + WINDOW + 3 ))
  "$LOAD" --url "$url" --streams "$n" --fixture "$FIXTURE" --duration "$duration" \
    --ramp "$ramp" --metrics "" --prefix s --quiet \
    --play-from "rtmp://127.0.0.1:$ORIGIN_PORT/live" --players-delay 2 >"$dir/load.log" 2>&1 &
  local load_pid=$!
  STARTED+=("$load_pid")
  nap $(( ramp + WARMUP ))
  local c0 c1 o0 o1 l0 l1 t0 t1 mem
  c0=$(cpu_ticks "$edge_pid"); o0=$(cpu_ticks "$origin_pid"); l0=$(cpu_ticks "$load_pid")
  t0=$(date +%s.%N)
  nap "$WINDOW"
  c1=$(cpu_ticks "$edge_pid"); o1=$(cpu_ticks "$origin_pid"); l1=$(cpu_ticks "$load_pid")
  t1=$(date +%s.%N)
  mem=$(rss_kb "$edge_pid")
  local skipped=""
  if [ "$edge" != nginx ]; then
    skipped=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" \
      | awk '/^livesnap_relay_skipped_bytes_total/ { s += $2 } END { print s + 0 }' || true)
  fi
  wait "$load_pid" || true
  stop_tree "$edge_pid"
  stop_tree "$origin_pid"
  local summary p50 p99 max connected lost unmatched
  summary=$(grep -E '^players:' "$dir/load.log" || echo "players: (none)")
  p50=$(sed -nE 's/.*frame lag p50=([0-9.]+) ms.*/\1/p' <<<"$summary")
  p99=$(sed -nE 's/.*frame lag .*p99=([0-9.]+) ms.*/\1/p' <<<"$summary")
  max=$(sed -nE 's/.*frame lag .*max=([0-9.]+) ms.*/\1/p' <<<"$summary")
  connected=$(sed -nE 's/^players: ([0-9]+) of.*/\1/p' <<<"$summary")
  lost=$(sed -nE 's/.*failed=([0-9]+) closed_early=([0-9]+).*/\1+\2/p' <<<"$summary")
  unmatched=$(sed -nE 's/.*, ([0-9]+) without a send time.*/\1/p' <<<"$summary")
  awk -v edge="$edge" -v n="$n" -v rep="$rep" -v tck="$TCK" -v c0="$c0" -v c1="$c1" \
      -v o0="$o0" -v o1="$o1" -v l0="$l0" -v l1="$l1" -v t0="$t0" -v t1="$t1" \
      -v idle="$idle" -v mem="$mem" -v p50="${p50:-nan}" -v p99="${p99:-nan}" -v max="${max:-nan}" \
      -v connected="${connected:-0}" -v lost="${lost:-?}" -v unmatched="${unmatched:-?}" \
      -v skipped="${skipped:--}" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
    win = t1 - t0; cpu = (c1 - c0) / tck
    printf "%s\t%d\t%d\t%.2f\t%.1f\t%.3f\t%.1f\t%.3f\t%.3f\t%.1f\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
      edge, n, rep, cpu, win, cpu / win, cpu / win * 3600 / n, (o1 - o0) / tck / win,
      (l1 - l0) / tck / win, mem / 1024, (mem - idle) / 1024 / n, connected, lost, unmatched,
      p50, p99, max, skipped, load
  }' >>"$OUT/results.tsv"
  log "$edge n=$n r$rep: $(tail -1 "$OUT/results.tsv" | cut -f4-19)"
}

{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), livesnap tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "# fixture $FIXTURE ($(du -k "$FIXTURE" | cut -f1) KiB), window ${WINDOW}s after ramp + ${WARMUP}s warm-up"
  printf 'edge\tN\trep\tedge_cpu_s\twindow_s\tedge_cores\tedge_cpu_s_per_stream_hour\torigin_cores\tload_gen_cores\tedge_rss_mb\tedge_rss_mb_per_stream\tplayers\tfailed+early\tunmatched\tlag_p50_ms\tlag_p99_ms\tlag_max_ms\tskipped_bytes\tloadavg\n'
} >>"$OUT/results.tsv"
log "results: $OUT/results.tsv"
for rep in $(seq "$REPS"); do
  for n in $STREAMS; do
    for edge in $EDGES; do
      run_one "$edge" "$n" "$rep"
    done
  done
done

echo
echo "Ingest + relay to one nginx-rtmp origin ($(nproc) cores, load now $(cut -d' ' -f1-3 /proc/loadavg)); cores = CPU seconds per second"
awk -F'\t' '
  /^#/ || $1 == "edge" { next }
  { printf "%-8s N=%-3s r%-2s edge %.3f cores (%.1f CPU s/stream-h), RSS %.1f MB (%.2f MB/stream) | origin %.3f, load gen %.3f | players %s/%s lost %s unmatched %s | relay lag p50 %s p99 %s max %s ms | skipped %s | loadavg %s\n",
      $1, $2, $3, $6, $7, $10, $11, $8, $9, $12, $2, $13, $14, $15, $16, $17, $18, $19 }' "$OUT/results.tsv" \
  | tail -n $((REPS * $(wc -w <<<"$STREAMS") * $(wc -w <<<"$EDGES")))
}

main "$@"
