# What the nginx comparison scripts (compare.sh, players.sh, relay.sh) need before they
# measure: source it after `log` is defined. Functions only; nothing runs on sourcing.

# install_missing [PACKAGE ...]: ffmpeg, nginx and its RTMP module (Debian), plus the
# given packages, installed with apt-get when missing.
install_missing() {
  local need=() p
  command -v ffmpeg >/dev/null || need+=(ffmpeg)
  command -v nginx >/dev/null || need+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
  for p in "$@"; do command -v "$p" >/dev/null || need+=("$p"); done
  [ ${#need[@]} -gt 0 ] || return 0
  log "installing ${need[*]}"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
}

# release_bins ROOT OUT BUILD SNAP_BIN LOAD_BIN: builds livesnap and livesnap-load in
# release when BUILD is 1, then copies them (SNAP_BIN / LOAD_BIN when given) to OUT/bin,
# so that a rebuild in the tree during the run does not change what is measured.
release_bins() {
  local root=$1 out=$2 build=$3 snap=$4 load=$5
  local target=${CARGO_TARGET_DIR:-$root/target}
  if [ "$build" = 1 ]; then
    log "building livesnap and livesnap-load (release)"
    (cd "$root" && cargo build --release --bin livesnap --bin livesnap-load 2>&1 | tail -1) >&2
  fi
  mkdir -p "$out/bin"
  cp "${snap:-$target/release/livesnap}" "$out/bin/livesnap"
  cp "${load:-$target/release/livesnap-load}" "$out/bin/livesnap-load"
}

# make_fixture DIR NAME SIZE PROFILE RATE SECS: DIR/NAME.flv, H.264 (2 s GOP at 30 fps) +
# AAC from ffmpeg's test sources, made once.
make_fixture() {
  local dir=$1 name=$2 size=$3 profile=$4 rate=$5 secs=$6
  [ -s "$dir/$name.flv" ] && return 0
  log "making $dir/$name.flv ($size $profile $rate, ${secs}s)"
  ffmpeg -nostdin -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=$size:rate=30,noise=alls=6:allf=t" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$secs" \
    -c:v libx264 -preset veryfast -profile:v "$profile" -pix_fmt yuv420p \
    -g 60 -keyint_min 60 -sc_threshold 0 -b:v "$rate" -maxrate "$rate" -bufsize "$rate" \
    -c:a aac -b:a 128k -ac 2 -map_metadata -1 -f flv "$dir/$name.flv.tmp"
  mv "$dir/$name.flv.tmp" "$dir/$name.flv"
}
