#!/usr/bin/env bash
# Reloads and binary upgrades under load: forkserve with 2 workers serves wrk (keep-alive,
# 64 connections, 20 s) while it gets a HUP every second, then 3 USR2 upgrades; the script
# prints wrk's totals. The target is 0 non-2xx responses and 0 socket errors. When nginx is
# installed, it runs the same load against nginx with `nginx -s reload` every second.
#
#   bench/reload-under-load.sh            # DURATION=20 CONNECTIONS=64 by default
#
# Needs wrk (Debian package `wrk`; installed with apt-get when missing and run as root).
# Servers listen on 127.0.0.1 only and are stopped by process group on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-64}
UPGRADES=3
PORT=${PORT:-18480}
NGINX_PORT=${NGINX_PORT:-18481}

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet
BIN=$PWD/target/release/forkserve
WORK=$(mktemp -d)
GROUPS_TO_KILL=()
cleanup() {
  for g in "${GROUPS_TO_KILL[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# wrk's totals as one line: requests, non-2xx, socket errors.
totals() {
  local out=$1
  local requests non2xx errors
  requests=$(awk '/requests in/ {print $1}' "$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$out"); non2xx=${non2xx:-0}
  errors=$(awk -F'[ ,]+' '/Socket errors/ {print "connect " $5 ", read " $7 ", write " $9 ", timeout " $11}' "$out")
  errors=${errors:-"connect 0, read 0, write 0, timeout 0"}
  echo "requests $requests, non-2xx $non2xx, socket errors: $errors"
}

# --- forkserve ---------------------------------------------------------------------------
PIDFILE=$WORK/forkserve.pid
setsid "$BIN" --workers 2 --bind "127.0.0.1:$PORT" --pidfile "$PIDFILE" config/app.toml \
  >"$WORK/forkserve.log" 2>&1 &
GROUPS_TO_KILL+=($!)
disown
for _ in $(seq 50); do [ -s "$PIDFILE" ] && grep -q "all workers ready" "$WORK/forkserve.log" && break; sleep 0.1; done

wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$WORK/wrk-forkserve.txt" &
WRK=$!
sleep 1
HUPS=$((DURATION - 2 * UPGRADES - 2))
for _ in $(seq "$HUPS"); do kill -HUP "$(cat "$PIDFILE")"; sleep 1; done
for _ in $(seq "$UPGRADES"); do
  kill -USR2 "$(cat "$PIDFILE")"
  sleep 2
done
wait "$WRK"
reloads=$(grep -c "reload complete" "$WORK/forkserve.log" || true)
upgrades=$(grep -c "upgrade complete" "$WORK/forkserve.log" || true)
failed=$(grep -cE "upgrade failed|reload failed|reload rejected" "$WORK/forkserve.log" || true)
kill -TERM "$(cat "$PIDFILE")"

echo "forkserve: $HUPS HUPs ($reloads reloads complete), $UPGRADES USR2 ($upgrades upgrades complete, $failed failed), wrk -t2 -c$CONNECTIONS -d${DURATION}s keep-alive"
echo "  $(totals "$WORK/wrk-forkserve.txt")"

# --- nginx, for comparison -----------------------------------------------------------------
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$WORK/nginx/logs"
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200 "Hello, World!\n"; }
  }
}
CONF
  setsid "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;" &
  GROUPS_TO_KILL+=($!)
  disown
  sleep 0.5
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$NGINX_PORT/" >"$WORK/wrk-nginx.txt" &
  WRK=$!
  sleep 1
  for _ in $(seq $((DURATION - 2))); do
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -s reload 2>/dev/null; sleep 1
  done
  wait "$WRK"
  echo "nginx: $((DURATION - 2)) 'nginx -s reload', same load"
  echo "  $(totals "$WORK/wrk-nginx.txt")"
else
  echo "nginx: not installed (apt-get install nginx-light) - no comparison"
fi
