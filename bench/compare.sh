#!/usr/bin/env bash
# forkserve against nginx on the same machine, in the same run: keep-alive hello world at 64
# and 256 connections, pipelined (depth 16), and static files of 4 KiB and 1 MiB (keep-alive, 64
# connections; nginx with sendfile on), each scenario run ROUNDS times interleaved (forkserve,
# nginx, forkserve, nginx, ...), medians reported. One worker pinned to CPU 0 with wrk pinned
# to CPU 1, then an unpinned round with 2 workers.
#
#   bench/compare.sh                 # ROUNDS=3 DURATION=5 by default
#
# Per run: requests/s, p50 and p99 latency, and requests per server CPU-second (utime+stime of
# every process of the server, from /proc), the figure wrk's own CPU use does not bound here.
# Installs wrk and nginx (Debian packages) when missing and run as root. Servers listen on
# 127.0.0.1 and are stopped by process group on every exit path.
#
# Not yet measured (issue 6): memory (PSS idle, under load, 10 000 idle
# connections), time to first response, HUP-to-serving, the access log, and the SVG chart.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
FS_PORT=${FS_PORT:-18490}
NGINX_PORT=${NGINX_PORT:-18491}
BODY='Hello, World!'

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need taskset util-linux || { echo "taskset is required" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || need nginx nginx-light || { echo "nginx is required (apt-get install nginx-light)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet
BIN=$PWD/target/release/forkserve
WORK=$(mktemp -d)
GROUP=""
stop_server() {
  if [ -n "$GROUP" ]; then kill -TERM -- "-$GROUP" 2>/dev/null || true; sleep 0.3; kill -KILL -- "-$GROUP" 2>/dev/null || true; fi
  GROUP=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT

# nginx's workers run as nobody when it is started as root: they must be able to read the files.
chmod 755 "$WORK"
mkdir -p "$WORK/static"
head -c 4096 /dev/urandom >"$WORK/static/4k.bin"
head -c 1048576 /dev/urandom >"$WORK/static/1m.bin"

cat >"$WORK/app.toml" <<CONF
[server]
bind = ["127.0.0.1:$FS_PORT"]
[[route]]
path = "/"
respond = "$BODY"
[[route]]
path = "/static/"
static = "$WORK/static"
CONF

cat >"$WORK/pipeline.lua" <<'LUA'
-- 16 requests per write, as a pipelining client sends them.
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
LUA

# Until the server on port $1 answers a GET with 200 (5 s at most): every server has served one
# request when it is measured.
wait_serving() {
  for _ in $(seq 100); do python3 bench/probe.py get --port "$1" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "the server on port $1 does not answer 200" >&2; exit 1
}

start_forkserve() { # workers cpus
  setsid taskset -c "$2" "$BIN" --workers "$1" "$WORK/app.toml" >"$WORK/fs.log" 2>&1 &
  GROUP=$!
  PORT=$FS_PORT
  for _ in $(seq 50); do grep -q "all workers ready" "$WORK/fs.log" 2>/dev/null && { wait_serving "$PORT"; return; }; sleep 0.1; done
  echo "forkserve did not start" >&2; cat "$WORK/fs.log" >&2; exit 1
}

write_nginx_conf() { # workers
  mkdir -p "$WORK/nginx/logs"
  rm -f "$WORK/nginx/nginx.pid"
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes $1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type text/plain; return 200 "$BODY"; }
    location /static/ { root $WORK; }
  }
}
CONF
}

start_nginx() { # workers cpus
  write_nginx_conf "$1"
  setsid taskset -c "$2" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;" &
  GROUP=$!
  PORT=$NGINX_PORT
  for _ in $(seq 50); do [ -s "$WORK/nginx/nginx.pid" ] && { wait_serving "$PORT"; return; }; sleep 0.1; done
  echo "nginx did not start" >&2; cat "$WORK/nginx/logs/error.log" >&2; exit 1
}

start_server() { # forkserve|nginx workers cpus: sets GROUP and PORT
  if [ "$1" = forkserve ]; then start_forkserve "$2" "$3"; else start_nginx "$2" "$3"; fi
}

# CPU ticks (utime + stime) of every process in the server's group.
cpu_ticks() {
  local total=0 pid
  for pid in $(pgrep -g "$GROUP"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# One wrk run against the running server: "req/s p50_ms p99_ms req_per_cpu_s errors".
measure() { # port connections wrk_cpus [lua] [path]
  local before after out rps p50 p99 total errors hz
  hz=$(getconf CLK_TCK)
  before=$(cpu_ticks)
  out=$(taskset -c "$3" wrk -t1 -c"$2" -d"${DURATION}s" --latency ${4:+-s "$4"} "http://127.0.0.1:$1${5:-/}")
  after=$(cpu_ticks)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  total=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $NF} END {print n + 0}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v n="$total" -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / hz) : 0) }') ${errors:-0}"
}

to_ms() { # wrk's 1.23ms / 456.00us / 1.2s; "n/a" for the 0.00us wrk prints for some pipelined runs
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; if (n > 0) printf "%.3f", n; else print "n/a" }'
}

# The median of the numbers on stdin (lines that are not numbers are skipped), or "n/a".
median() { awk '/^[0-9.]+$/' | sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# a / b with two decimals, or "n/a".
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

declare -A RESULTS
run_scenario() { # name workers server_cpus wrk_cpus connections [lua] [path]
  local name=$1 i server
  for i in $(seq "$ROUNDS"); do
    for server in forkserve nginx; do
      start_server "$server" "$2" "$3"
      RESULTS["$name|$server|$i"]=$(measure "$PORT" "$5" "$4" "${6:-}" "${7:-/}")
      stop_server
    done
  done
}

report() { # name: one row of the throughput table
  local name=$1 col server
  local -A med
  for server in forkserve nginx; do
    for col in 1 2 3 4 5; do
      med["$server|$col"]=$(for i in $(seq "$ROUNDS"); do awk -v c="$col" '{print $c}' <<<"${RESULTS["$name|$server|$i"]}"; done | median)
    done
  done
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
    "${med[forkserve|1]}" "${med[nginx|1]}" "$(ratio "${med[forkserve|1]}" "${med[nginx|1]}")" \
    "${med[forkserve|4]}" "${med[nginx|4]}" "$(ratio "${med[forkserve|4]}" "${med[nginx|4]}")" \
    "${med[forkserve|3]} / ${med[nginx|3]}" "${med[forkserve|5]}" "${med[nginx|5]}"
}

CPUS=$(nproc)
ALL_CPUS="0-$((CPUS - 1))"
if [ "$CPUS" -ge 2 ]; then PIN_SERVER=0; PIN_WRK=1; else PIN_SERVER=0; PIN_WRK=0; fi
SCENARIOS=(
  "keep-alive, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/"
  "keep-alive, 256 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|256||/"
  "pipelined x16, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64|$WORK/pipeline.lua|/"
  "static 4 KiB, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/static/4k.bin"
  "static 1 MiB, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/static/1m.bin"
  "keep-alive, 64 conns, 2 workers unpinned|2|$ALL_CPUS|$ALL_CPUS|64||/"
)
for s in "${SCENARIOS[@]}"; do
  IFS='|' read -r name workers server_cpus wrk_cpus conns lua path <<<"$s"
  run_scenario "$name" "$workers" "$server_cpus" "$wrk_cpus" "$conns" "$lua" "$path"
done
echo
echo "forkserve against nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $(date -u +%Y-%m-%d), $CPUS CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)); medians of $ROUNDS interleaved ${DURATION}s runs"
echo
echo "| scenario | forkserve req/s | nginx req/s | ratio | forkserve req/CPU-s | nginx req/CPU-s | ratio | p99 ms (fs / nginx) | fs errors | nginx errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for s in "${SCENARIOS[@]}"; do report "${s%%|*}"; done
