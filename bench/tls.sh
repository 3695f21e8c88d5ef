#!/usr/bin/env bash
# HTTPS: forkserve against nginx with the same certificate (ECDSA P-256, made here with openssl),
# one worker pinned to CPU 0 each, the client pinned to CPU 1, ROUNDS rounds interleaved,
# medians reported. Rows:
#   - https-keepalive: wrk -t1 -c64 over TLS, keep-alive hello world (TLS 1.3);
#   - tls-handshakes: openssl s_time -new: a full handshake per connection (TLS 1.3, no
#     resumption), nothing requested;
#   - tls-resumed: openssl s_time -reuse -tls1_2: resumed handshakes (tickets; openssl 3.0's
#     s_time does not resume TLS 1.3 sessions: every connection there is a full handshake);
#   - h2-tls-100-streams: h2load -c16 -m100 over TLS (ALPN h2; nginx `listen … ssl http2`),
#     hello world, when h2load (nghttp2-client) is installed.
# Figures: per second, and per CPU-second of the server (utime+stime of every process of the
# server, from /proc): s_time and wrk use CPU 1, so per second is bounded by the client too.
#
#   bench/tls.sh                       # ROUNDS=3 DURATION=5
#   ROUNDS=1 DURATION=2 bench/tls.sh   # a quick check
#   BIN=target/release/forkserve bench/tls.sh   # skip the build
#   ONLY=tls bench/compare.sh          # the same, its table into bench/results/tls.md
#
# Servers listen on 127.0.0.1 only and are stopped by process group on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
FS_PORT=${TLS_FS_PORT:-18495}
NGINX_PORT=${TLS_NGINX_PORT:-18496}
BODY='Hello, World!'
need wrk wrk || { echo "wrk is required" >&2; exit 1; }
need nginx nginx-light || { echo "nginx is required" >&2; exit 1; }
need taskset util-linux || { echo "taskset is required" >&2; exit 1; }
NGINX=$(command -v nginx)
ROWS="https-keepalive tls-handshakes tls-resumed"
if need h2load nghttp2-client; then ROWS="$ROWS h2-tls-100-streams"; fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/forkserve
fi

WORK=$(mktemp -d)
GROUP=
stop() { if [ -n "$GROUP" ]; then kill -TERM -- "-$GROUP" 2>/dev/null || true; wait "$GROUP" 2>/dev/null || true; GROUP=; fi; }
trap 'stop; rm -rf "$WORK"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat >"$WORK/app.toml" <<TOML
[server]
bind = ["127.0.0.1:$FS_PORT"]
[http]
keepalive = 120
[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[[route]]
path = "/"
respond = "$BODY"
TOML
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $WORK/nginx/error.log;
pid $WORK/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets on;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    location / { default_type text/plain; return 200 '$BODY'; }
  }
}
CONF

start() { # forkserve|nginx: sets GROUP and PORT
  case $1 in
    forkserve)
      setsid taskset -c 0 "$BIN" --workers 1 "$WORK/app.toml" >"$WORK/fs.log" 2>&1 &
      PORT=$FS_PORT ;;
    nginx)
      setsid taskset -c 0 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;" &
      PORT=$NGINX_PORT ;;
  esac
  GROUP=$!
  for _ in $(seq 500); do
    curl -sk -o /dev/null "https://127.0.0.1:$PORT/" && return 0
    sleep 0.01
  done
  echo "$1 did not serve" >&2
  exit 1
}

cpu_ticks() { # the summed utime+stime of the server's process group, in clock ticks
  local t=0 pid
  for pid in $(pgrep -g "$GROUP"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

HZ=$(getconf CLK_TCK)
run() { # server row: prints "per_second per_cpu_second"
  local before after n secs
  start "$1"
  before=$(cpu_ticks)
  case $2 in
    https-keepalive)
      n=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "https://127.0.0.1:$PORT/" | awk '/^Requests\/sec/ {print $2}') ;;
    tls-handshakes)
      n=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$PORT" -new -time "$DURATION" 2>/dev/null | awk '/real seconds/ {print $1 / $4; exit}') ;;
    tls-resumed)
      n=$(taskset -c 1 openssl s_time -connect "127.0.0.1:$PORT" -reuse -tls1_2 -time "$DURATION" 2>/dev/null | awk '/real seconds/ {print $1 / $4; exit}') ;;
    h2-tls-100-streams)
      taskset -c 1 h2load -c16 -m100 -D "$DURATION" "https://127.0.0.1:$PORT/" >"$WORK/h2load.txt" 2>&1 || true
      grep -q '^Application protocol: h2' "$WORK/h2load.txt" || { echo "$1: h2load did not get h2:" >&2; cat "$WORK/h2load.txt" >&2; }
      awk -v s="$1" '/succeeded,/ && ($10 + $12) > 0 {print s ": h2load: " $0 >"/dev/stderr"}' "$WORK/h2load.txt"
      n=$(awk '/^finished in/ {gsub(",", "", $4); print $4; exit}' "$WORK/h2load.txt") ;;
  esac
  after=$(cpu_ticks)
  stop
  secs=$(awk -v t=$((after - before)) -v hz="$HZ" 'BEGIN { print t / hz }')
  awk -v n="$n" -v s="$secs" -v d="$DURATION" 'BEGIN { printf "%.0f %.0f\n", n, (s > 0 ? n * d / s : 0) }'
}

echo "| row | forkserve /s | nginx /s | forkserve per CPU-s | nginx per CPU-s | ratio (per CPU-s) |"
echo "|---|---|---|---|---|---|"
for row in $ROWS; do
  : >"$WORK/forkserve.$row"
  : >"$WORK/nginx.$row"
  for _ in $(seq "$ROUNDS"); do
    for server in forkserve nginx; do
      run "$server" "$row" >>"$WORK/$server.$row"
    done
  done
  fs_s=$(cut -d' ' -f1 "$WORK/forkserve.$row" | median)
  ng_s=$(cut -d' ' -f1 "$WORK/nginx.$row" | median)
  fs_c=$(cut -d' ' -f2 "$WORK/forkserve.$row" | median)
  ng_c=$(cut -d' ' -f2 "$WORK/nginx.$row" | median)
  ratio=$(awk -v a="$fs_c" -v b="$ng_c" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  echo "| $row | $fs_s | $ng_s | $fs_c | $ng_c | $ratio |"
done
