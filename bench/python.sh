# The Python rows of bench/compare.sh (sourced by it; uses its helpers: measure, median, ratio,
# stop_server, pss_kib, NOTES, $WORK/chart.tsv). Run with PYTHON=1 (after the nginx rows, into the
# same report and chart) or ONLY=python (these rows alone, into bench/results/python.md and .svg).
#
# The same WSGI apps (bench/python/) under forkserve (--wsgi), Gunicorn (the sync worker for one
# thread, gthread for more), uWSGI (the pyuwsgi package; --http11-socket, so keep-alive as the
# others; --master like the others' masters) and Granian (--interface wsgi, --blocking-threads =
# the row's thread count, one runtime thread), all from a virtualenv made here
# ($PY_VENV, target/bench-venv by default, with the pinned bench/python/requirements.txt; made by
# $BENCH_PYTHON, python3 by default). Access logs are off in all of them. Every server of a row
# runs in turn in each round, medians over the rounds; one worker pinned to CPU 0 and wrk -t1 to
# CPU 1; requests per server CPU-second counts every process of the server (masters included).
#   - hello world (hello:app, GET /) and a small Flask app (flask_app:app, GET /users/42: a URL
#     converter and a jsonify'd record), 64 connections, with 1 thread and with 4 threads;
#   - a handler that sleeps 10 ms (hello:io_app), 256 connections, 8 threads. Each thread then
#     serves at most 100 requests/s, so the ceiling is 800 req/s whatever the server: far below
#     what one core does for any of them (Gunicorn gthread, the slowest, does ~3,500/CPU-s), so
#     the row shows whether a server keeps all 8 threads busy while 256 connections wait, not its
#     CPU cost again; 8 is also a usual gthread setting (2-4 x cores);
#   - a Django project (djsite.wsgi:application), 4 workers of 1 thread, unpinned: PSS of the
#     workers (Pss of /proc/PID/smaps_rollup, summed) after a warm-up, without and with preload
#     (forkserve --preload, Gunicorn --preload for reference). The workers are the server's
#     processes but its master and forkserve's mold (the template process that imports the app
#     and forks the workers); the whole server's PSS, mold and master included, is shown too.
# PY_ROWS="throughput memory" (the default) selects which of these run.
# Targets (issue 13): hello world ≥ 10x Gunicorn gthread and ≥ 1.0x Granian in req/CPU-s; Flask
# ≥ 1.0x Granian; the 10 ms handler ≥ 1.0x Gunicorn gthread's req/s; preload PSS ≤ 60 % of without.

UWSGI_PORT=${UWSGI_PORT:-18493}
GRANIAN_PORT=${GRANIAN_PORT:-18494}
PY_VENV=${PY_VENV:-$PWD/target/bench-venv}
BENCH_PYTHON=${BENCH_PYTHON:-python3}
PY_DIR=$PWD/bench/python
PY_SERVERS=(forkserve gunicorn uwsgi granian)

# The bench virtualenv with bench/python/requirements.txt installed (again when that file changed).
py_venv() {
  local req=$PY_DIR/requirements.txt
  if [ -x "$PY_VENV/bin/python" ] && cmp -s "$req" "$PY_VENV/bench-requirements.txt"; then return 0; fi
  { "$BENCH_PYTHON" -m venv "$PY_VENV" &&
    "$PY_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req" &&
    cp "$req" "$PY_VENV/bench-requirements.txt"; } >"$WORK/pip.log" 2>&1 && return 0
  echo "could not make the bench virtualenv $PY_VENV:" >&2
  cat "$WORK/pip.log" >&2
  return 1
}

# Whether this forkserve serves WSGI apps (the cargo feature "python").
# (Its help is read whole first: with pipefail, grep -q closing the pipe early could fail it.)
py_forkserve_ok() { grep -q -- '--wsgi' <<<"$("$BIN" --help 2>/dev/null || true)"; }

# Until the server answers GET / with 200 (20 s at most), or false once its process is gone.
py_wait() {
  for _ in $(seq 200); do
    kill -0 "$GROUP" 2>/dev/null || return 1
    python3 bench/probe.py get --port "$PORT" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  return 1
}

# Starts SERVER with the WSGI APP (module:callable in bench/python): sets GROUP and PORT; false,
# with the server stopped and its log in NOTES, when it does not serve.
py_start() { # server app threads workers cpus [extra flags...]
  local server=$1 app=$2 threads=$3 workers=$4 cpus=$5 class=sync uwsgi_threads=()
  shift 5
  case $server in
    forkserve)
      PORT=$FS_PORT
      setsid taskset -c "$cpus" "$BIN" --workers "$workers" --threads "$threads" --wsgi "$app" \
        --pythonpath "$PY_DIR" --venv "$PY_VENV" --bind "127.0.0.1:$PORT" "$@" >"$WORK/py.log" 2>&1 &
      ;;
    gunicorn)
      PORT=$GUNICORN_PORT
      [ "$threads" -gt 1 ] && class=gthread
      setsid taskset -c "$cpus" "$PY_VENV/bin/gunicorn" --workers "$workers" --worker-class "$class" \
        --threads "$threads" --bind "127.0.0.1:$PORT" --chdir "$PY_DIR" --no-control-socket \
        --log-level warning "$@" "$app" >"$WORK/py.log" 2>&1 &
      ;;
    uwsgi)
      PORT=$UWSGI_PORT
      # One thread: uWSGI's plain process mode (Python threads not even enabled), as Gunicorn sync.
      [ "$threads" -gt 1 ] && uwsgi_threads=(--threads "$threads")
      setsid taskset -c "$cpus" "$PY_VENV/bin/uwsgi" --http11-socket "127.0.0.1:$PORT" --chdir "$PY_DIR" \
        --module "$app" --master --processes "$workers" "${uwsgi_threads[@]}" \
        --single-interpreter --need-app --disable-logging --die-on-term "$@" >"$WORK/py.log" 2>&1 &
      ;;
    granian)
      PORT=$GRANIAN_PORT
      setsid taskset -c "$cpus" "$PY_VENV/bin/granian" --interface wsgi --workers "$workers" \
        --blocking-threads "$threads" --runtime-threads 1 --host 127.0.0.1 --port "$PORT" \
        --working-dir "$PY_DIR" --no-access-log --log-level warning "$@" "$app" >"$WORK/py.log" 2>&1 &
      ;;
  esac
  GROUP=$!
  py_wait && return 0
  NOTES+=("$server $app ($threads threads, $workers workers${*:+, $*}) did not serve: $(tail -c 600 "$WORK/py.log" | tr '\n' ' ')")
  stop_server
  return 1
}

py_label() { # server threads: the server as the tables name it
  case $1 in
    forkserve) echo "forkserve --threads $2" ;;
    gunicorn) if [ "$2" -gt 1 ]; then echo "Gunicorn gthread x$2"; else echo "Gunicorn sync"; fi ;;
    uwsgi) if [ "$2" -gt 1 ]; then echo "uWSGI --threads $2"; else echo "uWSGI"; fi ;;
    granian) echo "Granian, $2 blocking thread$([ "$2" -gt 1 ] && echo s)" ;;
  esac
}

# name|app|path|threads|connections|targets: "server:metric:ratio" that forkserve ÷ server must reach
PY_SCENARIOS=(
  "hello world, 1 thread|hello:app|/|1|64|granian:4:1.0"
  "hello world, 4 threads|hello:app|/|4|64|gunicorn:4:10 granian:4:1.0"
  "Flask JSON, 1 thread|flask_app:app|/users/42|1|64|granian:4:1.0"
  "Flask JSON, 4 threads|flask_app:app|/users/42|4|64|granian:4:1.0"
  "sleep 10 ms, 256 conns, 8 threads|hello:io_app|/|8|256|gunicorn:1:1.0"
)
declare -A PYR      # "scenario|server|round" -> measure's "req/s p50 p99 req/CPU-s errors"
declare -A PYPSS    # "preload|server|round" -> "workers_kib all_kib"
PY_FORKSERVE=0      # 1 when this forkserve serves WSGI

py_throughput() {
  local s name app path threads conns targets i server
  for s in "${PY_SCENARIOS[@]}"; do
    IFS='|' read -r name app path threads conns targets <<<"$s"
    for i in $(seq "$ROUNDS"); do
      for server in "${PY_SERVERS[@]}"; do
        [ "$server" = forkserve ] && [ "$PY_FORKSERVE" = 0 ] && continue
        py_start "$server" "$app" "$threads" 1 "$PIN_SERVER" || continue
        PYR["$name|$server|$i"]=$(measure "$PORT" "$conns" "$PIN_WRK" "" "$path")
        stop_server
      done
    done
  done
}

# PSS of the server's workers (its processes but the master and, for forkserve with --preload,
# the mold it forks them from, which logs its pid), of all its processes, and how many workers
# there were: "KiB KiB N".
py_pss() {
  local pids pid molds workers=()
  pids=$(pgrep -g "$GROUP")
  molds=" $(grep -o 'mold started pid=[0-9]*' "$WORK/py.log" 2>/dev/null | sed 's/.*=//' | tr '\n' ' ') "
  for pid in $pids; do
    [ "$pid" = "$GROUP" ] || [[ $molds == *" $pid "* ]] || workers+=("$pid")
  done
  # shellcheck disable=SC2086 # one PID a word
  echo "$(pss_kib "${workers[@]}") $(pss_kib $pids) ${#workers[@]}"
}

py_memory() {
  local i server preload flag out path
  for i in $(seq "$ROUNDS"); do
    for server in forkserve gunicorn; do
      [ "$server" = forkserve ] && [ "$PY_FORKSERVE" = 0 ] && continue
      for preload in without with; do
        flag=(); [ "$preload" = with ] && flag=(--preload)
        if [ "$server" = forkserve ] && [ "$preload" = with ] && ! grep -q -- '--preload' <<<"$("$BIN" --help 2>/dev/null || true)"; then
          [ "$i" = 1 ] && NOTES+=("forkserve has no --preload yet: its Django row with preload is not measured")
          continue
        fi
        py_start "$server" djsite.wsgi:application 1 4 "$ALL_CPUS" "${flag[@]}" || continue
        # Every worker has booted; then a warm-up over the pages (templates, admin, JSON).
        for _ in $(seq 100); do [ "$(pgrep -P "$GROUP" | wc -l)" -ge 4 ] && break; sleep 0.1; done
        for path in / /api/items/7 /admin/login/; do
          taskset -c "$PIN_WRK" wrk -t1 -c16 -d1s "http://127.0.0.1:$PORT$path" >/dev/null
        done
        sleep 0.5
        out=$(py_pss)
        if [ "${out##* }" != 4 ]; then
          NOTES+=("$server, Django $preload preload, round $i: $((${out##* })) worker processes found, not 4")
        fi
        PYPSS["$preload|$server|$i"]=${out% *}
        stop_server
      done
    done
  done
}

PY_ROWS=${PY_ROWS:-throughput memory}

py_run() {
  if py_forkserve_ok; then PY_FORKSERVE=1; else
    NOTES+=("this forkserve has no --wsgi (built without the python feature, or before it): its Python rows are not measured")
  fi
  if [[ " $PY_ROWS " == *" throughput "* ]]; then py_throughput; fi
  if [[ " $PY_ROWS " == *" memory "* ]]; then py_memory; fi
}

py_med() { # scenario server column
  local i
  for i in $(seq "$ROUNDS"); do awk -v c="$3" '{print $c}' <<<"${PYR["$1|$2|$i"]:-}"; done | median
}

py_report() { # the Python tables (stdout) and their chart rows ($WORK/chart.tsv)
  local s name app path threads conns targets server t want unit met r1 r4 section
  section="Python WSGI, 1 worker pinned: forkserve ÷ each server, req/CPU-s (sleep row: req/s), higher is better"
  echo "| Python scenario | server | req/s | req/CPU-s | p99 ms | errors | forkserve ÷ this, req/s | forkserve ÷ this, req/CPU-s | target | met? |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for s in "${PY_SCENARIOS[@]}"; do
    IFS='|' read -r name app path threads conns targets <<<"$s"
    for server in "${PY_SERVERS[@]}"; do
      r1=$(ratio "$(py_med "$name" forkserve 1)" "$(py_med "$name" "$server" 1)")
      r4=$(ratio "$(py_med "$name" forkserve 4)" "$(py_med "$name" "$server" 4)")
      want="" met="" unit=""
      for t in $targets; do
        IFS=: read -r ts tc tr <<<"$t"
        [ "$ts" = "$server" ] || continue
        want=$tr
        if [ "$tc" = 1 ]; then unit=req/s; met=$r1; else unit=req/CPU-s; met=$r4; fi
        met=$(awk -v v="$met" -v t="$want" 'BEGIN { print (v ~ /^[0-9.]+$/ ? (v >= t ? "yes" : "**no**") : "n/a") }')
      done
      if [ "$server" = forkserve ]; then r1="–" r4="–"; fi
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$(py_label "$server" "$threads")" \
        "$(py_med "$name" "$server" 1)" "$(py_med "$name" "$server" 4)" "$(py_med "$name" "$server" 3)" \
        "$(py_med "$name" "$server" 5)" "$r1" "$r4" "${want:+≥ ${want}x $unit}" "$met"
      if [ "$server" != forkserve ] && [ "$PY_FORKSERVE" = 1 ]; then
        if [ "$conns" = 256 ]; then t=$r1; else t=$r4; fi
        printf '%s\t%s\t÷ %s\t%s\t%s\n' "$section" "$name" "$(py_label "$server" 1 | sed 's/,.*//; s/ sync//')" "$t" "${want:--}" >>"$WORK/chart.tsv"
      fi
    done
  done
  echo
  echo "| Django, 4 workers of 1 thread, unpinned | forkserve | Gunicorn sync | target | met? |"
  echo "|---|---|---|---|---|"
  local -A m
  for server in forkserve gunicorn; do
    for preload in without with; do
      for col in 1 2; do
        m["$preload|$server|$col"]=$(for i in $(seq "$ROUNDS"); do awk -v c="$col" '{print $c}' <<<"${PYPSS["$preload|$server|$i"]:-}"; done | median)
      done
    done
    m["ratio|$server"]=$(ratio "${m[with|$server|1]}" "${m[without|$server|1]}")
  done
  met=$(awk -v v="${m[ratio|forkserve]}" 'BEGIN { print (v ~ /^[0-9.]+$/ ? (v <= 0.6 ? "yes" : "**no**") : "n/a") }')
  echo "| PSS of the 4 workers without preload (KiB) | ${m[without|forkserve|1]} | ${m[without|gunicorn|1]} |  |  |"
  echo "| PSS of the 4 workers with preload (KiB) | ${m[with|forkserve|1]} | ${m[with|gunicorn|1]} |  |  |"
  echo "| with ÷ without | ${m[ratio|forkserve]} | ${m[ratio|gunicorn]} | ≤ 0.60 | $met |"
  echo "| PSS of every process of the server (master, mold), without / with preload (KiB) | ${m[without|forkserve|2]} / ${m[with|forkserve|2]} | ${m[without|gunicorn|2]} / ${m[with|gunicorn|2]} |  |  |"
  echo "| every process, with ÷ without | $(ratio "${m[with|forkserve|2]}" "${m[without|forkserve|2]}") | $(ratio "${m[with|gunicorn|2]}" "${m[without|gunicorn|2]}") |  |  |"
  section="Python: Django worker PSS with preload ÷ without, 4 workers, lower is better"
  printf '%s\tDjango, 4 workers\tforkserve\t%s\t0.6\n' "$section" "${m[ratio|forkserve]}" >>"$WORK/chart.tsv"
  printf '%s\tDjango, 4 workers\tGunicorn\t%s\t-\n' "$section" "${m[ratio|gunicorn]}" >>"$WORK/chart.tsv"
  echo
  echo "Python servers ($("$PY_VENV/bin/python" --version 2>&1), virtualenv $(basename "$PY_VENV")): $(grep -E '^[A-Za-z]' "$PY_DIR/requirements.txt" | paste -sd ' ')."
  echo "The apps are in bench/python/. uWSGI serves with --http11-socket (keep-alive) and --master; Granian with one runtime thread; Gunicorn's sync worker closes the connection after each response (it has no keep-alive)."
  echo "uWSGI's threads each keep one keep-alive connection to themselves: in the 256-connection row most of wrk's connections wait in its listen queue and are never answered, which wrk does not count as errors, so its p99 there is that of the few connections it serves."
}
