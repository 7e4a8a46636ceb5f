# Process bookkeeping shared by the bench scripts (compare.sh, players.sh, relay.sh):
# source it after `set -euo pipefail`. It defines STARTED (PIDs the script started: add
# each server and load generator with STARTED+=("$pid")), the traps that stop them all
# on exit or interrupt, and the /proc readers the measurements use.

STARTED=()

# tree_pids ROOT: ROOT and all its descendants.
tree_pids() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      for (p in parent) {
        q = p; n = 0
        while (q != "" && q != 0 && n < 64) { if (q == root) { print p; break } q = parent[q]; n++ }
      }
    }'
}

# cpu_ticks ROOT: utime+stime summed over the tree.
cpu_ticks() {
  local total=0 pid line
  for pid in $(tree_pids "$1"); do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    line=${line##*) }
    # shellcheck disable=SC2086
    set -- $line
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# cpu_ticks_with_children ROOT: utime+stime+cutime+cstime summed over the tree (children
# that already exited, e.g. ffmpeg runs started by nginx's exec, included).
cpu_ticks_with_children() {
  local total=0 pid line
  for pid in $(tree_pids "$1"); do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    line=${line##*) }
    # shellcheck disable=SC2086
    set -- $line
    total=$((total + ${12} + ${13} + ${14} + ${15}))
  done
  echo "$total"
}

# rss_kb ROOT: VmRSS summed over the tree.
rss_kb() {
  local rss=0 pid v
  for pid in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && rss=$((rss + ${v:-0}))
  done
  echo "$rss"
}

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_tree() {
  local pids p
  pids=$(tree_pids "$1")
  stop_pid "$1"
  for p in $pids; do stop_pid "$p"; done
}

cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do stop_tree "$pid"; done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nap() {
  sleep "$1" &
  wait $! || true
}

# sleep_until T0 SECS: until SECS after T0 (date +%s.%N).
sleep_until() {
  local left
  left=$(awk -v t0="$1" -v s="$2" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + s - now; print (d > 0) ? d : 0 }')
  nap "$left"
}
