#!/usr/bin/env bash
# forkserve against nginx on the same machine, in the same run, each scenario run ROUNDS times
# interleaved (forkserve, nginx, forkserve, nginx, ...), medians reported. Unless a row says
# otherwise, the server has one worker pinned to CPU 0 and the client (wrk -t1, or the Python
# probe) is pinned to CPU 1.
#
# Throughput (first table): keep-alive hello world at 64 and 256 connections, pipelined (depth
# 16), static files of 4 KiB and 1 MiB (keep-alive, 64 connections; nginx with sendfile on), then
# keep-alive hello world with 2 workers, unpinned, then keep-alive hello world with an access log
# to a file (forkserve's default `combined`; nginx's `combined` with `buffer=64k flush=1s`, both
# writing whole buffers), then HTTP/2 with prior knowledge (h2c: forkserve's --h2c; nginx's
# `listen … http2` on a port of its own, as nginx 1.22 serves h2c only there, without HTTP/1;
# `http2 on`, which tells them apart by the preface as forkserve does, is nginx ≥ 1.25.1): h2load,
# 16 connections of 100 streams each (when h2load is installed: nghttp2-client). Per run:
# requests/s, p50 and p99 latency,
# errors, and requests per server CPU-second (utime+stime of every process of the server, from
# /proc), the figure wrk's own CPU use does not bound here.
#
# Memory and time (second table; targets are forkserve's):
#   - worker PSS (the Pss line of /proc/PID/smaps_rollup, summed over the workers, not the
#     master): idle after one request, and sampled near the end of a 256-connection wrk run;
#   - memory per idle keep-alive connection: bench/probe.py opens IDLE_CONNS (10 000)
#     connections to the worker, has one request answered on each and holds them; (worker PSS
#     holding them - PSS before) / IDLE_CONNS. Both servers keep idle connections for 120 s and
#     allow 20 000. The probe checks that every one got a 200 and is still open. Target 4 KiB;
#   - exec to first 200: bench/probe.py spawns the server and polls it (connect + GET every
#     0.2 ms); milliseconds from just before the spawn to the first 200. Target 10 ms;
#   - HUP reload with 2 workers (unpinned): from kill -HUP to every worker of the new generation
#     serving. forkserve: until its "reload complete" line is logged (its duration_ms is shown
#     too), then a request must get a 200; nginx: until all the master's children are new
#     processes and a request got a 200 (this includes the 100 ms nginx's master sleeps before
#     it tells the old workers to quit). Target 100 ms.
#
#   bench/compare.sh                          # ROUNDS=3 DURATION=5: about 6 minutes
#   ROUNDS=1 DURATION=1 bench/compare.sh      # a quick check that every part runs
#   WITH_GUNICORN=1 bench/compare.sh          # plus gunicorn (pip, sync workers) in the
#                                             # keep-alive hello-world rows, for reference
#   PYTHON=1 bench/compare.sh                 # plus the Python rows (bench/python.sh says
#                                             # which): WSGI apps under forkserve, Gunicorn,
#                                             # uWSGI and Granian; about 7 minutes more
#   ONLY=python bench/compare.sh              # the Python rows alone
#   ONLY=h2 bench/compare.sh                  # the h2c row alone, into bench/results/h2.md
#   ONLY=tls bench/compare.sh                 # the TLS rows alone (bench/tls.sh: HTTPS
#                                             # keep-alive, full and resumed handshakes, h2
#                                             # over TLS), into bench/results/tls.md
#
# The full run has the TLS rows too, in a table of their own (bench/tls.sh, same ROUNDS and
# DURATION): forkserve and nginx with one ECDSA P-256 certificate made for the run.
#
# Prints the tables (markdown) and writes them to bench/results/latest.md, and the
# forkserve/nginx ratios (and forkserve's against the Python servers) as a chart to
# bench/results/latest.svg; ONLY=python writes bench/results/python.md and .svg instead, so that
# the full run's files stay. Builds the release binary;
# installs wrk, nginx-light and util-linux (taskset) with apt-get when missing and run as root;
# needs python3 (standard library only). IDLE_CONNS needs an open-files hard limit above it
# (ulimit -Hn; raised when run as root). Servers listen on 127.0.0.1 only and are stopped by
# process group on every exit path.
#
# The access log row is also set against the first row: forkserve's requests per CPU-second with
# the access log on ÷ off, target 0.85 (issue 14).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
FS_PORT=${FS_PORT:-18490}
NGINX_PORT=${NGINX_PORT:-18491}
BODY='Hello, World!'
IDLE_CONNS=${IDLE_CONNS:-10000}
WITH_GUNICORN=${WITH_GUNICORN:-0}
GUNICORN_PORT=${GUNICORN_PORT:-18492}
NGINX_H2_PORT=${NGINX_H2_PORT:-18493}
ONLY=${ONLY:-}     # "python": the Python rows alone
PYTHON=${PYTHON:-0} # 1: the Python rows too
[ "$ONLY" = python ] && PYTHON=1
case "$ONLY" in
  ""|python|h2|tls) ;;
  *) echo "ONLY=$ONLY: only ONLY=python, ONLY=h2 or ONLY=tls is known" >&2; exit 2 ;;
esac
NGINX_ROWS=1
[ "$ONLY" = python ] && NGINX_ROWS=0
TLS_ROWS=0
{ [ -z "$ONLY" ] || [ "$ONLY" = tls ]; } && TLS_ROWS=1
[ "$ONLY" = tls ] && NGINX_ROWS=0

# shellcheck source=bench/lib.sh
. bench/lib.sh
need wrk wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need taskset util-linux || { echo "taskset is required" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$NGINX_ROWS" = 1 ]; then
  [ -x "$NGINX" ] || need nginx nginx-light || { echo "nginx is required (apt-get install nginx-light)" >&2; exit 1; }
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
# The h2c row: h2load, and an nginx with HTTP/2.
H2_ROWS=0
if [ "$NGINX_ROWS" = 1 ] && need h2load nghttp2-client && "$NGINX" -V 2>&1 | grep -q http_v2_module; then
  H2_ROWS=1
fi
need pgrep procps || { echo "pgrep is required (apt-get install procps)" >&2; exit 1; }

# Each idle connection is a file descriptor in the client and in the server.
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
if [ "$NOFILE" -lt $((IDLE_CONNS + 1000)) ]; then
  if ulimit -n $((IDLE_CONNS + 1000)) 2>/dev/null; then NOFILE=$((IDLE_CONNS + 1000)); else
    echo "warning: the open-files hard limit ($NOFILE) is too low for $IDLE_CONNS idle connections" >&2
  fi
fi

cargo build --release --quiet
BIN=$PWD/target/release/forkserve
WORK=$(mktemp -d)
GROUP=""  # the running server's process group
CLIENT="" # a load generator or probe running in the background
stop_server() {
  if [ -n "$GROUP" ]; then
    kill -TERM -- "-$GROUP" 2>/dev/null || true
    # Up to 3 s to exit by itself (Gunicorn's and uWSGI's masters take longer than nginx's),
    # then KILL; reaped here, so that the next server starts on a quiet machine.
    for _ in $(seq 60); do kill -0 -- "-$GROUP" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$GROUP" 2>/dev/null || true
    wait "$GROUP" 2>/dev/null || true
  fi
  GROUP=""
  # A server bench/probe.py spawned (it stops it itself; this is for when the probe is killed).
  if [ -s "$WORK/spawned.pgid" ]; then kill -KILL -- "-$(cat "$WORK/spawned.pgid")" 2>/dev/null || true; rm -f "$WORK/spawned.pgid"; fi
}
cleanup() {
  if [ -n "$CLIENT" ]; then kill -TERM "$CLIENT" 2>/dev/null || true; fi
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT

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

# ACCESS_LOG=1 (set for a scenario's run): both servers write an access log to a file.
ACCESS_LOG=${ACCESS_LOG:-}

start_forkserve() { # workers cpus [flags...]
  local log=()
  if [ -n "$ACCESS_LOG" ]; then log=(--access-logfile "$WORK/access.log"); fi
  setsid taskset -c "$2" "$BIN" --workers "$1" "${log[@]}" "${@:3}" "$WORK/app.toml" >"$WORK/fs.log" 2>&1 &
  GROUP=$!
  PORT=$FS_PORT
  for _ in $(seq 50); do grep -q "all workers ready" "$WORK/fs.log" 2>/dev/null && { wait_serving "$PORT"; return; }; sleep 0.1; done
  echo "forkserve did not start" >&2; cat "$WORK/fs.log" >&2; exit 1
}

write_nginx_conf() { # workers [worker_connections [keepalive_timeout]]
  mkdir -p "$WORK/nginx/logs"
  rm -f "$WORK/nginx/nginx.pid" "$WORK/access.log" "$WORK/nginx/logs/access.log"
  local access_log=off
  if [ -n "$ACCESS_LOG" ]; then access_log="$WORK/nginx/logs/access.log combined buffer=64k flush=1s"; fi
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes $1;
worker_rlimit_nofile $NOFILE;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections ${2:-4096}; }
http {
  access_log $access_log;
  keepalive_requests 1000000;
  keepalive_timeout ${3:-75s};
  sendfile on;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type text/plain; return 200 "$BODY"; }
    location /static/ { root $WORK; }
  }
  server {
    $([ "$H2_ROWS" = 1 ] && echo "listen 127.0.0.1:$NGINX_H2_PORT http2;" || echo "listen 127.0.0.1:$NGINX_H2_PORT;")
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
CONF
}

start_nginx() { # workers cpus [worker_connections [keepalive_timeout]]
  write_nginx_conf "$1" "${3:-}" "${4:-}"
  setsid taskset -c "$2" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;" &
  GROUP=$!
  PORT=$NGINX_PORT
  for _ in $(seq 50); do [ -s "$WORK/nginx/nginx.pid" ] && { wait_serving "$PORT"; return; }; sleep 0.1; done
  echo "nginx did not start" >&2; cat "$WORK/nginx/logs/error.log" >&2; exit 1
}

# shellcheck source=bench/python.sh
. bench/python.sh
if [ "$PYTHON" = 1 ] || [ "$WITH_GUNICORN" = 1 ]; then py_venv || exit 1; fi

# WITH_GUNICORN=1: gunicorn (from the bench virtualenv) with its default sync workers, serving
# the same hello world from a WSGI function (bench/python/hello.py), as a reference in the
# hello-world rows.
GUNICORN=("$PY_VENV/bin/gunicorn")

start_gunicorn() { # workers cpus
  setsid taskset -c "$2" "${GUNICORN[@]}" --workers "$1" --bind "127.0.0.1:$GUNICORN_PORT" \
    --chdir "$PY_DIR" --no-control-socket --log-level warning hello:app >"$WORK/gunicorn.log" 2>&1 &
  GROUP=$!
  PORT=$GUNICORN_PORT
  wait_serving "$PORT"
}

start_server() { # forkserve|nginx|gunicorn workers cpus: sets GROUP and PORT
  rm -f "$WORK/access.log"
  case $1 in
    forkserve) start_forkserve "$2" "$3" ;;
    nginx) start_nginx "$2" "$3" ;;
    gunicorn) start_gunicorn "$2" "$3" ;;
  esac
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

# One h2load run (h2c, prior knowledge) against the running server, in measure's format.
# p50 and p99 are of each request's time (h2load's --log-file), from its start on the wire.
measure_h2() { # port connections streams h2load_cpus
  local before after out hz total errors
  hz=$(getconf CLK_TCK)
  before=$(cpu_ticks)
  out=$(taskset -c "$4" h2load -c"$2" -m"$3" -D"$DURATION" --log-file="$WORK/h2load.log" "http://127.0.0.1:$1/")
  after=$(cpu_ticks)
  total=$(awk '/^requests:/ {print $8}' <<<"$out")
  errors=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
  errors=$((errors + $(awk '/^status codes:/ {print $5 + $7 + $9}' <<<"$out")))
  read -r p50 p99 < <(awk '{print $3}' "$WORK/h2load.log" | sort -n |
    awk '{a[NR] = $1} END { if (NR) printf "%.3f %.3f\n", a[int(NR * 0.5) + (NR * 0.5 > int(NR * 0.5))] / 1000, a[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))] / 1000; else print "n/a n/a" }')
  echo "$(awk '/^finished in/ {print $4}' <<<"$out") $p50 $p99 $(awk -v n="${total:-0}" -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.0f", (t > 0 ? n / (t / hz) : 0) }') ${errors:-0}"
}

to_ms() { # wrk's 1.23ms / 456.00us / 1.2s; "n/a" for the 0.00us wrk prints for some pipelined runs
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; if (n > 0) printf "%.3f", n; else print "n/a" }'
}

# The median of the numbers on stdin (lines that are not numbers are skipped), or "n/a".
median() { awk '/^[0-9.]+$/' | sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "n/a"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# a / b with two decimals, or "n/a".
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Every round, forkserve then nginx: FUNCTION forkserve|nginx ROUND.
each_round() { # function
  local i server
  for i in $(seq "$ROUNDS"); do
    for server in forkserve nginx; do "$1" "$server" "$i"; done
  done
}

declare -A RESULTS
run_scenario() { # name workers server_cpus wrk_cpus connections [lua] [path] [gunicorn]
  local name=$1 i server servers=(forkserve nginx)
  if [ "$WITH_GUNICORN" = 1 ] && [ "${8:-}" = gunicorn ]; then servers+=(gunicorn); fi
  for i in $(seq "$ROUNDS"); do
    for server in "${servers[@]}"; do
      start_server "$server" "$2" "$3"
      RESULTS["$name|$server|$i"]=$(measure "$PORT" "$5" "$4" "${6:-}" "${7:-/}")
      stop_server
    done
  done
}

# The h2c row: forkserve with --h2c on its port, nginx on its http2 port.
run_h2_scenario() { # name connections streams
  local i server
  for i in $(seq "$ROUNDS"); do
    for server in forkserve nginx; do
      if [ "$server" = forkserve ]; then
        start_forkserve 1 "$PIN_SERVER" --h2c=true
        RESULTS["$1|$server|$i"]=$(measure_h2 "$FS_PORT" "$2" "$3" "$PIN_WRK")
      else
        start_nginx 1 "$PIN_SERVER"
        RESULTS["$1|$server|$i"]=$(measure_h2 "$NGINX_H2_PORT" "$2" "$3" "$PIN_WRK")
      fi
      stop_server
    done
  done
}

# Worker processes: the master's children (forkserve's workers; nginx's, as it has no cache
# processes here).
worker_pids() { pgrep -P "$GROUP" | tr '\n' ' '; }

pss_kib() { # pid...: their summed Pss, in KiB
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0))); done
  echo "$total"
}

declare -A RES # "row|server|round" -> one figure of the memory and time table
NOTES=()       # what went wrong, printed under the tables

# Worker PSS idle (after one request), then near the end of a 256-connection keep-alive run.
memory_round() { # server round
  local pids
  start_server "$1" 1 "$PIN_SERVER"
  pids=$(worker_pids)
  sleep 0.2
  RES["pss idle|$1|$2"]=$(pss_kib $pids)
  taskset -c "$PIN_WRK" wrk -t1 -c256 -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$WORK/wrk-memory.txt" &
  CLIENT=$!
  sleep "$(awk -v d="$DURATION" 'BEGIN { print (d > 2 ? d - 1 : d * 0.7) }')"
  RES["pss load|$1|$2"]=$(pss_kib $pids)
  wait "$CLIENT" || true
  CLIENT=""
  stop_server
}

# IDLE_CONNS idle keep-alive connections held by one worker: PSS before and while held.
idle_round() { # server round
  local pids before after held open
  if [ "$1" = forkserve ]; then
    start_forkserve 1 "$PIN_SERVER" --keepalive 120 --worker-connections 20000
  else
    start_nginx 1 "$PIN_SERVER" 20000 120s
  fi
  pids=$(worker_pids)
  sleep 0.2
  before=$(pss_kib $pids)
  rm -f "$WORK/idle.in" "$WORK/idle.out"
  mkfifo "$WORK/idle.in"
  # The probe holds the connections until its stdin (fd 7 here) is closed.
  taskset -c "$PIN_WRK" python3 bench/probe.py idle --port "$PORT" --count "$IDLE_CONNS" <"$WORK/idle.in" >"$WORK/idle.out" 2>&1 &
  CLIENT=$!
  exec 7>"$WORK/idle.in"
  for _ in $(seq 1200); do
    grep -q '^held' "$WORK/idle.out" && break
    kill -0 "$CLIENT" 2>/dev/null || break
    sleep 0.1
  done
  sleep 0.5 # the worker is done with the last responses
  after=$(pss_kib $pids)
  exec 7>&-
  wait "$CLIENT" || true
  CLIENT=""
  stop_server
  held=$(awk '/^held/ {sub("ok=", "", $3); print $3}' "$WORK/idle.out")
  open=$(awk '/^open/ {print $2}' "$WORK/idle.out")
  RES["pss idle conns|$1|$2"]=$after
  if [ "${held:-0}" = "$IDLE_CONNS" ] && [ "${open:-0}" = "$IDLE_CONNS" ]; then
    RES["per conn|$1|$2"]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
  else
    NOTES+=("$1, round $2: of $IDLE_CONNS idle connections, ${held:-0} got a 200 and ${open:-0} were still open after the measurement ($(tr '\n' ' ' <"$WORK/idle.out"))")
  fi
}

# Milliseconds from exec to the first 200, one worker; bench/probe.py spawns and stops it.
startup_round() { # server round
  local cmd out
  if [ "$1" = forkserve ]; then
    cmd=("$BIN" --workers 1 "$WORK/app.toml")
    PORT=$FS_PORT
  else
    write_nginx_conf 1
    cmd=("$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g "daemon off;")
    PORT=$NGINX_PORT
  fi
  if out=$(python3 bench/probe.py first-response --port "$PORT" --cpus "$PIN_SERVER" --prober-cpus "$PIN_WRK" \
    --pgid-file "$WORK/spawned.pgid" --log "$WORK/first.log" -- "${cmd[@]}" 2>&1); then
    RES["first 200|$1|$2"]=$out
  else
    NOTES+=("$1, round $2: no first 200: $out")
  fi
}

# HUP with 2 workers, until every worker of the new generation serves.
reload_round() { # server round
  local out
  start_server "$1" 2 "$ALL_CPUS"
  if [ "$1" = forkserve ]; then
    out=$(python3 bench/probe.py reload --pid "$GROUP" --port "$PORT" --workers 2 --log "$WORK/fs.log" 2>&1) || true
  else
    out=$(python3 bench/probe.py reload --pid "$GROUP" --port "$PORT" --workers 2 --nginx 2>&1) || true
  fi
  stop_server
  if [[ $out =~ ^([0-9.]+)\ ([0-9]+|-)\ 200$ ]]; then
    RES["reload|$1|$2"]=${BASH_REMATCH[1]}
    RES["reload logged|$1|$2"]=${BASH_REMATCH[2]}
  else
    NOTES+=("$1, round $2: HUP reload: $out")
  fi
}

declare -A RATIO_TARGET=(["pipelined x16, 64 conns, 1 worker pinned"]=4.0)
THROUGHPUT="Throughput: forkserve ÷ nginx, higher is better"
RESOURCES="Memory and time: forkserve ÷ nginx, lower is better"

report() { # name: one row of the throughput table (and its bars in the chart)
  local name=$1 col server gunicorn=""
  local -A med
  for server in forkserve nginx gunicorn; do
    for col in 1 2 3 4 5; do
      med["$server|$col"]=$(for i in $(seq "$ROUNDS"); do awk -v c="$col" '{print $c}' <<<"${RESULTS["$name|$server|$i"]:-}"; done | median)
    done
  done
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
    "${med[forkserve|1]}" "${med[nginx|1]}" "$(ratio "${med[forkserve|1]}" "${med[nginx|1]}")" \
    "${med[forkserve|4]}" "${med[nginx|4]}" "$(ratio "${med[forkserve|4]}" "${med[nginx|4]}")" \
    "${med[forkserve|3]} / ${med[nginx|3]}" "${med[forkserve|5]}" "${med[nginx|5]}" | tr -d '\n'
  if [ "$WITH_GUNICORN" = 1 ]; then
    if [ "${med[gunicorn|1]}" = n/a ]; then gunicorn=" – | – | – |"; else
      gunicorn=" ${med[gunicorn|1]} | ${med[gunicorn|4]} | ${med[gunicorn|5]} |"
    fi
  fi
  echo "$gunicorn"
  printf '%s\t%s\treq/s\t%s\t%s\n' "$THROUGHPUT" "$name" "$(ratio "${med[forkserve|1]}" "${med[nginx|1]}")" "${RATIO_TARGET[$name]:--}" >>"$WORK/chart.tsv"
  printf '%s\t%s\treq/CPU-s\t%s\t-\n' "$THROUGHPUT" "$name" "$(ratio "${med[forkserve|4]}" "${med[nginx|4]}")" >>"$WORK/chart.tsv"
}

# forkserve's requests per CPU-second with its access log on ÷ off (the first row), and nginx's.
access_log_ratio() {
  local server on off r
  local -A got
  for server in forkserve nginx; do
    on=$(for i in $(seq "$ROUNDS"); do awk '{print $4}' <<<"${RESULTS["$ACCESS_ROW|$server|$i"]:-}"; done | median)
    off=$(for i in $(seq "$ROUNDS"); do awk '{print $4}' <<<"${RESULTS["${SCENARIOS[0]%%|*}|$server|$i"]:-}"; done | median)
    got[$server]=$(ratio "$on" "$off")
  done
  r=${got[forkserve]}
  echo "Access log on ÷ off, keep-alive 64 conns, req/CPU-s: forkserve ${got[forkserve]} (target ≥ 0.85: $(awk -v v="$r" 'BEGIN { print (v ~ /^[0-9.]+$/ ? (v >= 0.85 ? "yes" : "**no**") : "n/a") }')), nginx ${got[nginx]}."
}

resource_row() { # row label chart_label [target unit]: one row of the memory and time table
  local fs ng r met="" i
  fs=$(for i in $(seq "$ROUNDS"); do echo "${RES["$1|forkserve|$i"]:-}"; done | median)
  ng=$(for i in $(seq "$ROUNDS"); do echo "${RES["$1|nginx|$i"]:-}"; done | median)
  r=$(ratio "$fs" "$ng")
  if [ -n "${4:-}" ]; then
    met=$(awk -v v="$fs" -v t="$4" 'BEGIN { print (v ~ /^[0-9.]+$/ ? (v <= t ? "yes" : "**no**") : "n/a") }')
  fi
  printf '| %s | %s | %s | %s | %s | %s |\n' "$2" "$fs" "$ng" "$r" "${4:+≤ $4 $5}" "$met"
  printf '%s\t%s\tforkserve ÷ nginx\t%s\t%s\n' "$RESOURCES" "$3" "$r" "$([ -n "${4:-}" ] && ratio "$4" "$ng" || echo -)" >>"$WORK/chart.tsv"
}

CPUS=$(nproc)
ALL_CPUS="0-$((CPUS - 1))"
if [ "$CPUS" -ge 2 ]; then PIN_SERVER=0; PIN_WRK=1; else PIN_SERVER=0; PIN_WRK=0; fi
# name|workers|server CPUs|wrk CPUs|connections|wrk script|path|gunicorn (WITH_GUNICORN=1)|access log
SCENARIOS=(
  "keep-alive, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/|gunicorn"
  "keep-alive, 256 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|256||/|gunicorn"
  "pipelined x16, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64|$WORK/pipeline.lua|/|"
  "static 4 KiB, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/static/4k.bin|"
  "static 1 MiB, 64 conns, 1 worker pinned|1|$PIN_SERVER|$PIN_WRK|64||/static/1m.bin|"
  "keep-alive, 64 conns, 2 workers unpinned|2|$ALL_CPUS|$ALL_CPUS|64||/|gunicorn"
  "keep-alive, 64 conns, 1 worker pinned, access log|1|$PIN_SERVER|$PIN_WRK|64||/||1"
)
ACCESS_ROW="keep-alive, 64 conns, 1 worker pinned, access log"
H2_ROW="h2c, 16 conns × 100 streams (h2load), 1 worker pinned"
if [ "$ONLY" = h2 ]; then
  [ "$H2_ROWS" = 1 ] || { echo "ONLY=h2 needs h2load (nghttp2-client) and an nginx with HTTP/2" >&2; exit 1; }
  SCENARIOS=()
  run_h2_scenario "$H2_ROW" 16 100
elif [ "$NGINX_ROWS" = 1 ]; then
  for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r name workers server_cpus wrk_cpus conns lua path gunicorn log <<<"$s"
    ACCESS_LOG=$log run_scenario "$name" "$workers" "$server_cpus" "$wrk_cpus" "$conns" "$lua" "$path" "$gunicorn"
  done
  if [ "$H2_ROWS" = 1 ]; then run_h2_scenario "$H2_ROW" 16 100; fi
  each_round memory_round
  each_round idle_round
  each_round startup_round
  each_round reload_round
fi
if [ "$PYTHON" = 1 ]; then py_run; fi
if [ "$TLS_ROWS" = 1 ]; then
  ROUNDS=$ROUNDS DURATION=$DURATION BIN=$BIN bash bench/tls.sh >"$WORK/tls.md"
fi

CPU_MODEL=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///' || true)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
nginx_tables() { # the tables of the nginx rows
  echo "forkserve $REV against nginx $NGINX_VERSION on $CPU_MODEL, $CPUS CPUs, $DATE; medians of $ROUNDS interleaved runs (wrk runs of ${DURATION}s); 1 worker pinned to CPU $PIN_SERVER and the client to CPU $PIN_WRK unless the row says otherwise"
  echo
  if [ "$WITH_GUNICORN" = 1 ]; then
    echo "| scenario | forkserve req/s | nginx req/s | ratio | forkserve req/CPU-s | nginx req/CPU-s | ratio | p99 ms (fs / nginx) | fs errors | nginx errors | gunicorn req/s | gunicorn req/CPU-s | gunicorn errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  else
    echo "| scenario | forkserve req/s | nginx req/s | ratio | forkserve req/CPU-s | nginx req/CPU-s | ratio | p99 ms (fs / nginx) | fs errors | nginx errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
  fi
  for s in "${SCENARIOS[@]}"; do report "${s%%|*}"; done
  if [ "$H2_ROWS" = 1 ]; then report "$H2_ROW"; fi
  echo
  if [ "$ONLY" = h2 ]; then
    echo "nginx $NGINX_VERSION serves h2c on a \`listen … http2\` port of its own (prior knowledge only: HTTP/1 there fails); forkserve with --h2c on its one port, HTTP/1 too."
    return
  fi
  access_log_ratio
  echo
  echo "| memory and time | forkserve | nginx | ratio | target | met? |"
  echo "|---|---|---|---|---|---|"
  resource_row "pss idle" "worker PSS idle, after one request (KiB)" "worker PSS, idle"
  resource_row "pss load" "worker PSS under load, keep-alive 256 conns (KiB)" "worker PSS, 256 busy conns"
  resource_row "pss idle conns" "worker PSS holding $IDLE_CONNS idle keep-alive conns (KiB)" "worker PSS, $IDLE_CONNS idle conns"
  resource_row "per conn" "memory per idle keep-alive connection (bytes)" "memory per idle connection" 4096 B
  resource_row "first 200" "exec to first 200, 1 worker (ms)" "exec to first 200" 10 ms
  resource_row "reload" "HUP to all new workers serving, 2 workers (ms)" "HUP reload, 2 workers" 100 ms
  printf '| %s | %s | %s | %s | %s | %s |\n' "reload duration_ms logged by forkserve" \
    "$(for i in $(seq "$ROUNDS"); do echo "${RES["reload logged|forkserve|$i"]:-}"; done | median)" "–" "–" "" ""
  if [ "$WITH_GUNICORN" = 1 ]; then
    echo
    echo "gunicorn $("${GUNICORN[@]}" --version 2>&1 | sed 's/.*version //; s/)//'), default sync workers (no keep-alive: one connection per request), hello world from a WSGI function."
  fi
  echo
  echo "nginx's reload figure includes the 100 ms its master sleeps after starting the new workers, before it tells the old ones to quit; forkserve's counts until its new workers are all ready (the old ones then drain)."
  echo
}

{
  if [ "$NGINX_ROWS" = 1 ]; then nginx_tables; fi
  if [ "$PYTHON" = 1 ]; then
    echo "forkserve $REV against Python WSGI servers on $CPU_MODEL, $CPUS CPUs, $DATE; medians of $ROUNDS interleaved runs (wrk runs of ${DURATION}s); 1 worker pinned to CPU $PIN_SERVER and wrk -t1 to CPU $PIN_WRK, 64 connections unless the row says otherwise"
    echo
    py_report
    echo
  fi
  if [ "$TLS_ROWS" = 1 ]; then
    echo "TLS: forkserve $REV against nginx $NGINX_VERSION (OpenSSL $(openssl version | awk '{print $2}')) with the same ECDSA P-256 certificate, on $CPU_MODEL, $CPUS CPUs, $DATE; medians of $ROUNDS interleaved runs of ${DURATION}s; 1 worker pinned to CPU 0, the client to CPU 1 (bench/tls.sh)"
    echo
    cat "$WORK/tls.md"
    echo
  fi
  if [ "${#NOTES[@]}" -gt 0 ]; then
    for n in "${NOTES[@]}"; do echo "- $n"; done
  fi
} >"$WORK/report.md"

OUT=bench/results/latest
TITLE="forkserve ÷ nginx"
SUBTITLE="forkserve $REV, nginx $NGINX_VERSION; medians of $ROUNDS interleaved runs; log scale; memory and time targets drawn relative to nginx"
if [ "$ONLY" = tls ]; then
  OUT=bench/results/tls
elif [ "$ONLY" = h2 ]; then
  OUT=bench/results/h2
  TITLE="forkserve ÷ nginx, HTTP/2"
elif [ "$ONLY" = python ]; then
  OUT=bench/results/python
  TITLE="forkserve ÷ Python WSGI servers"
  SUBTITLE="forkserve $REV; medians of $ROUNDS interleaved runs; log scale"
elif [ "$PYTHON" = 1 ]; then
  TITLE="forkserve ÷ nginx and WSGI servers"
fi
echo
cat "$WORK/report.md"
mkdir -p bench/results
cp "$WORK/report.md" "$OUT.md"
if [ "$ONLY" = tls ]; then echo; echo "wrote $OUT.md"; exit 0; fi
python3 bench/chart.py --title "$TITLE: $CPU_MODEL, $CPUS CPUs, $DATE" --subtitle "$SUBTITLE" \
  <"$WORK/chart.tsv" >"$OUT.svg"
echo
echo "wrote $OUT.md and $OUT.svg"
