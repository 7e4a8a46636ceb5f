#!/usr/bin/env bash
# Side-by-side cost of keyframe snapshots on one machine, in one run:
#
#   livesnap          livesnap, a rule taking a snapshot every 5 s (fs storage)
#   livesnap-ingest   livesnap with no rule (ingest only)
#   livesnap-rtmps    the same, published over RTMPS (server.rtmps_listen, a self-signed
#                     certificate made with openssl; livesnap-load --insecure)
#   nginx             nginx-rtmp ingest only (Debian's nginx + libnginx-mod-rtmp)
#   nginx-ffmpeg-key  nginx-rtmp + exec_push ffmpeg -skip_frame nokey … select (one JPEG per 5 s,
#                     decoding keyframes only): the usual recipe
#   nginx-ffmpeg-all  nginx-rtmp + exec_push ffmpeg decoding every frame (fps=1/5); at about 0.15 core
#                     per 1080p stream it saturates 2 cores at N = 10, so it runs only for
#                     N <= --all-max-n (default 1)
#
# For each configuration and each N (streams), the same fixture is published N times by
# livesnap-load (real time, looped), everything on loopback. After the ramp and a warm-up,
# whole-process CPU seconds (utime+stime of the server's process tree, children included) are
# measured over a window and scaled to CPU seconds per stream-hour; RSS and PSS of the tree
# are sampled at the end of the window (minus the idle server's) and divided by N.
#
# Usage:
#   benches/compare.sh [--streams "1 10 50"] [--window 60] [--warmup 15] [--reps 1]
#                      [--configs "livesnap livesnap-ingest nginx nginx-ffmpeg-key nginx-ffmpeg-all"]
#                      [--fixture FILE.flv] [--all-max-n 1] [--out DIR] [--no-install] [--no-build]
#                      [--livesnap-bin PATH]   # measure another livesnap build (implies --no-build)
#                      [--load-bin PATH]       # another livesnap-load build
#   benches/compare.sh fixtures DIR     # only make the 720p/1080p Baseline/High test files
#
# Without --fixture, a 60 s 1080p30 High-profile, 4 Mbit/s, 2 s GOP file (+ AAC) is made with
# ffmpeg/libx264 into the output folder (the committed 1080p fixture is ~1 Mbit/s). Results go
# to OUT/results.tsv (one line per run) and a median table on stdout. Ports: 19350 (livesnap
# RTMP), 18935 (livesnap HTTP), 19351 (nginx), all on 127.0.0.1. Everything started is
# stopped by its PID at the end, also on Ctrl-C.
set -euo pipefail

# All of it in one function, called on the last line: bash reads the whole file before
# running anything, so editing this file while a comparison runs is harmless.
main() {

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STREAMS="1 10 50"
WINDOW=60
WARMUP=15
REPS=1
CONFIGS="livesnap livesnap-ingest nginx nginx-ffmpeg-key nginx-ffmpeg-all"
FIXTURE=""
OUT=/tmp/livesnap-compare
ALL_MAX_N=1
INSTALL=1
BUILD=1
SNAP_BIN=""
LOAD_BIN=""
SNAP_PORT=19350
TLS_PORT=19352
HTTP_PORT=18935
NGINX_PORT=19351
TCK=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# make_fixture OUT NAME SIZE PROFILE RATE SECS: testsrc2 with light temporal noise (so the
# encoder spends its bits like on a camera), 30 fps, IDR every 2 s, x264 veryfast (OBS's
# default preset), constrained to RATE, AAC 128k stereo.
. "$ROOT/benches/support/setup.sh" # install_missing, release_bins, make_fixture

if [ "${1:-}" = fixtures ]; then
  dir=${2:?usage: compare.sh fixtures DIR}
  mkdir -p "$dir"
  make_fixture "$dir" baseline_1280x720_2500k 1280x720 baseline 2500k 20
  make_fixture "$dir" high_1280x720_2500k 1280x720 high 2500k 20
  make_fixture "$dir" baseline_1920x1080_4M 1920x1080 baseline 4M 20
  make_fixture "$dir" high_1920x1080_4M 1920x1080 high 4M 60
  exit 0
fi

while [ $# -gt 0 ]; do
  case $1 in
    --streams) STREAMS=$2; shift 2 ;;
    --window) WINDOW=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --configs) CONFIGS=$2; shift 2 ;;
    --fixture) FIXTURE=$2; shift 2 ;;
    --all-max-n) ALL_MAX_N=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --livesnap-bin) SNAP_BIN=$2; BUILD=0; shift 2 ;;
    --load-bin) LOAD_BIN=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT/bin" "$OUT/logs"

# --- what it needs ---------------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then install_missing nasm; fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
release_bins "$ROOT" "$OUT" "$BUILD" "$SNAP_BIN" "$LOAD_BIN"
SNAP="$OUT/bin/livesnap"
LOAD="$OUT/bin/livesnap-load"

if [ -z "$FIXTURE" ]; then
  make_fixture "$OUT" high_1920x1080_4M 1920x1080 high 4M 60
  FIXTURE="$OUT/high_1920x1080_4M.flv"
fi

# --- process bookkeeping ---------------------------------------------------------------------
. "$ROOT/benches/support/proc.sh" # STARTED, cleanup traps, tree_pids, cpu_ticks, rss_kb, nap, …

# mem_kb ROOT: "RSS PSS" in kB summed over the tree.
mem_kb() {
  local rss=0 pss=0 pid v
  for pid in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && rss=$((rss + ${v:-0}))
    v=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null) && pss=$((pss + ${v:-0}))
  done
  echo "$rss $pss"
}

wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# --- server configurations -------------------------------------------------------------------
write_livesnap_conf() { # FILE RULES(0|1) SNAPDIR [TLS_DIR]
  local tls=""
  if [ -n "${4:-}" ]; then
    tls="rtmps_listen = \"127.0.0.1:$TLS_PORT\"
tls_cert_file = \"$4/cert.pem\"
tls_key_file = \"$4/key.pem\""
  fi
  cat >"$1" <<EOF
[server]
rtmp_listen = "127.0.0.1:$SNAP_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
$tls
[limits]
max_connections = 4096
max_connections_per_ip = 4096
[snapshot]
workers = 0
[storage.default]
scheme = "fs"
root = "$3"
[log]
filter = "warn"
EOF
  if [ "$2" = 1 ]; then
    cat >>"$1" <<'EOF'
[[rules]]
domain = "*"
app = "*"
interval_secs = 5
storage = "default"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
EOF
  fi
}

write_nginx_conf() { # FILE PREFIX MODE(ingest|key|all) SNAPDIR
  local exec_line=""
  case $3 in
    key)
      # Decode keyframes only; keep one every >= 5 s; JPEG per snapshot.
      exec_line="exec_push ffmpeg -nostdin -loglevel error -skip_frame nokey -i rtmp://127.0.0.1:$NGINX_PORT/live/\$name -an -vf \"select='isnan(prev_selected_t)+gte(t-prev_selected_t,5)'\" -vsync vfr -q:v 3 -f image2 $4/\$name-%06d.jpg;" ;;
    all)
      exec_line="exec_push ffmpeg -nostdin -loglevel error -i rtmp://127.0.0.1:$NGINX_PORT/live/\$name -an -vf fps=1/5 -q:v 3 -f image2 $4/\$name-%06d.jpg;" ;;
  esac
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
      $exec_line
    }
  }
}
EOF
}

# run_one CONFIG N REP → appends a line to results.tsv
run_one() {
  local cfg=$1 n=$2 rep=$3
  local tag="$cfg-n$n-r$rep" dir="$OUT/run/$cfg-n$n-r$rep"
  rm -rf "$dir"; mkdir -p "$dir/snaps"
  local url metrics="" server_pid tls_args=()
  case $cfg in
    livesnap | livesnap-ingest)
      write_livesnap_conf "$dir/livesnap.toml" "$([ "$cfg" = livesnap ] && echo 1 || echo 0)" "$dir/snaps"
      "$SNAP" serve --config "$dir/livesnap.toml" >"$dir/server.log" 2>&1 &
      server_pid=$!
      url="rtmp://127.0.0.1:$SNAP_PORT/live"
      metrics="http://127.0.0.1:$HTTP_PORT/metrics"
      wait_port "$SNAP_PORT"; wait_port "$HTTP_PORT" ;;
    livesnap-rtmps)
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
      write_livesnap_conf "$dir/livesnap.toml" 0 "$dir/snaps" "$dir"
      "$SNAP" serve --config "$dir/livesnap.toml" >"$dir/server.log" 2>&1 &
      server_pid=$!
      url="rtmps://127.0.0.1:$TLS_PORT/live"
      tls_args=(--insecure)
      metrics="http://127.0.0.1:$HTTP_PORT/metrics"
      wait_port "$TLS_PORT"; wait_port "$HTTP_PORT" ;;
    nginx | nginx-ffmpeg-key | nginx-ffmpeg-all)
      local mode=ingest
      [ "$cfg" = nginx-ffmpeg-key ] && mode=key
      [ "$cfg" = nginx-ffmpeg-all ] && mode=all
      mkdir -p "$dir/nginx/logs"
      write_nginx_conf "$dir/nginx.conf" "$dir/nginx" "$mode" "$dir/snaps"
      nginx -p "$dir/nginx" -c "$dir/nginx.conf" >"$dir/server.log" 2>&1 &
      server_pid=$!
      url="rtmp://127.0.0.1:$NGINX_PORT/live"
      wait_port "$NGINX_PORT" ;;
    *) echo "unknown config $cfg" >&2; return 1 ;;
  esac
  STARTED+=("$server_pid")
  sleep 1
  local idle
  idle=$(mem_kb "$server_pid")
  local ramp=$(( n >= 10 ? 10 : 1 ))
  local duration=$(( ramp + WARMUP + WINDOW + 3 ))
  "$LOAD" --url "$url" --streams "$n" --fixture "$FIXTURE" --duration "$duration" \
    --ramp "$ramp" --metrics "$metrics" --prefix s --quiet "${tls_args[@]}" >"$dir/load.log" 2>&1 &
  local load_pid=$!
  STARTED+=("$load_pid")
  nap $(( ramp + WARMUP ))
  local c0 c1 t0 t1
  c0=$(cpu_ticks_with_children "$server_pid"); t0=$(date +%s.%N)
  nap "$WINDOW"
  c1=$(cpu_ticks_with_children "$server_pid"); t1=$(date +%s.%N)
  local mem
  mem=$(mem_kb "$server_pid")
  wait "$load_pid" || true
  sleep 1
  # Stop the server and whatever it started (ffmpeg children of nginx).
  stop_tree "$server_pid"
  local jpgs
  jpgs=$(find "$dir/snaps" -name '*.jpg' -not -path '*/.livesnap-tmp/*' | wc -l)
  local snapline
  snapline=$(grep -E '^final:' "$dir/load.log" | sed 's/^final: //' || true)
  local errors
  errors=$(grep -oE 'errors=[0-9]+' "$dir/load.log" | tail -1 | cut -d= -f2)
  awk -v cfg="$cfg" -v n="$n" -v rep="$rep" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
      -v tck="$TCK" -v idle="$idle" -v mem="$mem" -v jpgs="$jpgs" -v errors="${errors:-?}" \
      -v load="$(cut -d' ' -f1 /proc/loadavg)" -v snap="$snapline" 'BEGIN {
    split(idle, i, " "); split(mem, m, " ")
    cpu = (c1 - c0) / tck; win = t1 - t0
    printf "%s\t%d\t%d\t%.2f\t%.1f\t%.2f\t%.1f\t%.1f\t%.1f\t%d\t%s\t%s\t%s\n",
      cfg, n, rep, cpu, win, cpu / win * 3600 / n,
      (m[1] - i[1]) / 1024 / n, (m[2] - i[2]) / 1024 / n, m[1] / 1024, jpgs, errors, load, snap
  }' >>"$OUT/results.tsv"
  log "$tag: $(tail -1 "$OUT/results.tsv" | cut -f4-12)"
}

# --- main ------------------------------------------------------------------------------------
{
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# livesnap binary ${SNAP_BIN:-$TARGET/release/livesnap} (tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?))"
  echo "# fixture $FIXTURE ($(du -k "$FIXTURE" | cut -f1) KiB), window ${WINDOW}s after ramp + ${WARMUP}s warm-up"
  printf 'config\tN\trep\tcpu_s\twindow_s\tcpu_s_per_stream_hour\trss_mb_per_stream\tpss_mb_per_stream\trss_total_mb\tjpgs\tload_errors\tloadavg\tlivesnap_snapshots\n'
} >>"$OUT/results.tsv"
log "results: $OUT/results.tsv"
for rep in $(seq "$REPS"); do
  for n in $STREAMS; do
    for cfg in $CONFIGS; do
      if [ "$cfg" = nginx-ffmpeg-all ] && [ "$n" -gt "$ALL_MAX_N" ]; then continue; fi
      run_one "$cfg" "$n" "$rep"
    done
  done
done

# Median table over the reps of this file's runs.
echo
echo "CPU seconds per stream-hour and memory per stream (medians over reps; $(nproc) cores, $(cut -d' ' -f1-3 /proc/loadavg) load now)"
awk -F'\t' '
  /^#/ || $1 == "config" { next }
  { k = $1 "\t" $2; n[k]++; cpu[k, n[k]] = $6; rss[k, n[k]] = $7; pss[k, n[k]] = $8; keys[k] = 1 }
  function med(a, k, c,   i, j, t, v) {
    for (i = 1; i <= c; i++) v[i] = a[k, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
  }
  END {
    printf "%-18s %5s %5s %14s %14s %14s\n", "config", "N", "runs", "CPU s/str-h", "RSS MB/str", "PSS MB/str"
    for (k in keys) {
      split(k, p, "\t"); c = n[k]
      printf "%-18s %5d %5d %14.1f %14.2f %14.2f\n", p[1], p[2], c, med(cpu, k, c), med(rss, k, c), med(pss, k, c)
    }
  }' "$OUT/results.tsv" | sort -k2,2n -k1,1
}

main "$@"
