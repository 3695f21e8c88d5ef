#!/usr/bin/env python3
"""Small HTTP/1.1 probes for bench/compare.sh (Python 3 standard library only).

  probe.py get --port P [--path /]
      One GET on a new connection; prints the status; exit 0 on a 200.

  probe.py first-response --port P [--cpus 0] [--prober-cpus 1] [--pgid-file F] [--log F] -- CMD...
      Spawns CMD in a new session (its own process group) and polls it with connect + GET every
      0.2 ms until a 200 arrives; prints the milliseconds from just before the spawn to the 200.
      The server's process group is stopped (TERM, then KILL) before exiting, on every path;
      its pid is written to the pgid file meanwhile, for the caller's trap.

  probe.py reload --pid MASTER --port P --workers N (--log FILE | --nginx)
      Sends HUP to MASTER and prints "WALL_MS LOGGED_MS STATUS":
      forkserve (--log): WALL_MS until the master's "reload complete" line appears in FILE,
      LOGGED_MS its duration_ms, STATUS that of a GET made right after;
      nginx (--nginx): WALL_MS until every child of the master is a new process (N of them) and
      a GET has been answered 200; LOGGED_MS is "-".

  probe.py idle --port P --count N [--window W]
      Opens N connections, sends one complete GET on each and reads its response, keeping the
      connection open (idle keep-alive); prints "held N ok=K" and waits for a line on stdin;
      then checks which connections the server still holds open, prints "open M", closes
      them all (RST, no TIME_WAIT) and exits 0 only if K == M == N.

  probe.py slow-readers --bin FORKSERVE [--count 1000] [--size-mb 5] [--send-timeout SECS]
                        [--closed-by client|server]
      Starts FORKSERVE (one worker, a static route to a SIZE-MB file, worker_connections above
      COUNT) in its own process group, then opens COUNT connections with a tiny receive buffer
      that each send a GET of the file and never read. Prints the worker's RSS idle, while they
      are held, and after they are gone (closed by the clients with a reset, or by the server
      at send_timeout), and the latency of normal requests made meanwhile. Exit 0 if every
      normal request got a 200.
"""
import argparse
import errno
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time

REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: forkserve-bench\r\n\r\n"


class Response:
    """Incremental parser of one response with a Content-Length (or none: empty body)."""

    def __init__(self):
        self.buf = b""
        self.status = None
        self.need = None  # total bytes of head + body once the head is parsed

    def feed(self, data):
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split()[1])
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            self.need = end + 4 + length
        return len(self.buf) >= self.need


def get(port, path="/", timeout=5.0):
    """One GET on a new connection; the status, or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(REQUEST % path.encode())
        r = Response()
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed before a complete response")
            if r.feed(data):
                return r.status


def cpus(spec):
    out = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def stop_group(proc):
    """TERM the process group of proc (its leader), then KILL what is left after 2 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a member of its group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.005)


def cmd_get(a):
    try:
        status = get(a.port, a.path)
    except OSError as e:
        print(f"error {e}")
        return 1
    print(status)
    return 0 if status == 200 else 1


def cmd_first_response(a):
    if not a.cmd:
        sys.exit("first-response: no command")
    if a.cpus:  # the child inherits this affinity; the prober moves on to its own CPUs
        os.sched_setaffinity(0, cpus(a.cpus))
    log = open(a.log, "wb") if a.log else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.Popen(a.cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    try:
        if a.pgid_file:
            with open(a.pgid_file, "w") as f:
                f.write(f"{proc.pid}\n")
        if a.prober_cpus:
            os.sched_setaffinity(0, cpus(a.prober_cpus))
        deadline = t0 + a.timeout
        while True:
            try:
                status = get(a.port, timeout=a.timeout)
                if status == 200:
                    t1 = time.perf_counter()
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                print(f"error: the server exited with {proc.returncode}", file=sys.stderr)
                return 1
            if time.perf_counter() > deadline:
                print("error: no 200 within the timeout", file=sys.stderr)
                return 1
            time.sleep(0.0002)
        print(f"{(t1 - t0) * 1000:.3f}")
        return 0
    finally:
        stop_group(proc)
        proc.wait()
        if a.pgid_file:
            try:
                os.unlink(a.pgid_file)
            except FileNotFoundError:
                pass


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return set(map(int, f.read().split()))
    except FileNotFoundError:
        return set()


def cmd_reload(a):
    deadline = time.perf_counter() + a.timeout

    def gone():
        if os.path.exists(f"/proc/{a.pid}"):
            return False
        print(f"error: the master {a.pid} is gone", file=sys.stderr)
        return True
    if a.log:
        f = open(a.log, "rb")
        f.seek(0, os.SEEK_END)
        buf = b""
        t0 = time.perf_counter()
        os.kill(a.pid, signal.SIGHUP)
        while True:
            buf += f.read()
            lines = buf.split(b"\n")
            done = [ln for ln in lines[:-1] if b"reload complete" in ln]
            if done:
                t1 = time.perf_counter()
                break
            bad = [ln for ln in lines[:-1] if re.search(rb"reload (failed|rejected)", ln)]
            if bad:
                print(f"error: {bad[0].decode(errors='replace')}", file=sys.stderr)
                return 1
            if time.perf_counter() > deadline:
                print("error: no 'reload complete' line within the timeout", file=sys.stderr)
                return 1
            if gone():
                return 1
            time.sleep(0.0002)
        m = re.search(rb"duration_ms=(\d+)", done[0])
        logged = m.group(1).decode() if m else "-"
        try:
            status = get(a.port)
        except OSError as e:
            print(f"error: request after the reload: {e}", file=sys.stderr)
            status = 0
        print(f"{(t1 - t0) * 1000:.3f} {logged} {status}")
        return 0 if status == 200 else 1
    old = children(a.pid)
    t0 = time.perf_counter()
    os.kill(a.pid, signal.SIGHUP)
    while True:
        now = children(a.pid)
        if len(now) >= a.workers and not (now & old):
            try:
                if get(a.port) == 200:
                    t1 = time.perf_counter()
                    break
            except OSError:
                pass
        if time.perf_counter() > deadline:
            print(f"error: old workers {sorted(now & old)} still there", file=sys.stderr)
            return 1
        if gone():
            return 1
        time.sleep(0.0002)
    print(f"{(t1 - t0) * 1000:.3f} - 200")
    return 0


def raise_nofile(want):
    """Raises the open-files soft limit to the hard one if it is below `want`; False (with a
    message) if even the hard limit is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print(f"error: open-files hard limit {hard} < {want}", file=sys.stderr)
            return False
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


def cmd_idle(a):
    if not raise_nofile(a.count + 64):
        return 1
    ep = select.epoll()
    req = REQUEST % b"/"
    conns = {}  # fd -> [socket, Response or None (still connecting)]
    held = []
    ok = failed = started = 0
    deadline = time.monotonic() + a.timeout

    def start():
        nonlocal started
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", a.port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        conns[s.fileno()] = [s, None]
        ep.register(s.fileno(), select.EPOLLOUT)
        started += 1

    while ok + failed < a.count:
        while started < a.count and len(conns) < a.window:
            start()
        if time.monotonic() > deadline:
            print(f"error: timed out with {len(conns)} connections pending", file=sys.stderr)
            break
        for fd, ev in ep.poll(1.0):
            s, r = conns[fd]
            try:
                if r is None:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    s.send(req)  # small: fits in an empty send buffer
                    conns[fd][1] = Response()
                    ep.modify(fd, select.EPOLLIN)
                    continue
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                if r.feed(data):
                    ep.unregister(fd)
                    del conns[fd]
                    if r.status == 200:
                        ok += 1
                        held.append(s)
                    else:
                        failed += 1
                        s.close()
            except OSError:
                ep.unregister(fd)
                del conns[fd]
                failed += 1
                s.close()
    print(f"held {len(held)} ok={ok}", flush=True)
    sys.stdin.readline()
    still = 0
    for s in held:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                continue  # the server closed it
        except BlockingIOError:
            still += 1  # nothing to read, not closed: open and idle
        except OSError:
            pass
    print(f"open {still}", flush=True)
    linger = struct.pack("ii", 1, 0)
    for s in held:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
    return 0 if ok == still == a.count else 1


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sockets(pid):
    """How many sockets pid has open (its listeners and connections)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass
    return n


def settle(pid, at_most, quiet=1.0):
    """Waits until pid's RSS has not moved by 1% for `quiet` seconds (or `at_most`); the RSS."""
    end = time.monotonic() + at_most
    last, since = rss_kib(pid), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        now = rss_kib(pid)
        if abs(now - last) > last / 100:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return rss_kib(pid)


def normal_latencies(port, n=20):
    """n GETs of / on new connections: their latencies in ms (None for a failure)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            ok = get(port, "/", timeout=5.0) == 200
        except OSError:
            ok = False
        out.append((time.perf_counter() - t0) * 1000 if ok else None)
        time.sleep(0.02)
    return out


def cmd_slow_readers(a):
    import tempfile
    if not raise_nofile(a.count + 256):
        return 1
    tmp = tempfile.TemporaryDirectory(prefix="forkserve-slow-")
    os.mkdir(f"{tmp.name}/public")
    with open(f"{tmp.name}/public/big.bin", "wb") as f:
        f.write(os.urandom(a.size_mb << 20))
    with open(f"{tmp.name}/app.toml", "w") as f:
        f.write('[[route]]\npath = "/"\nrespond = "hello\\n"\n'
                '[[route]]\npath = "/static/"\nstatic = "./public"\n')
    log_path = f"{tmp.name}/log"
    log = open(log_path, "wb")
    cmd = [a.bin, "-w", "1", "-b", "127.0.0.1:0", "--worker-connections", str(a.count + 100)]
    if a.send_timeout is not None:  # else the server's default (an older one has no such flag)
        cmd += ["--send-timeout", str(a.send_timeout)]
    cmd.append(f"{tmp.name}/app.toml")
    proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    slow = []
    try:
        deadline = time.monotonic() + 10
        port = None
        while time.monotonic() < deadline:
            text = open(log_path, "rb").read().decode(errors="replace")
            m = re.search(r"listening address=127\.0\.0\.1:(\d+)", text)
            if m and "all workers ready" in text:
                port = int(m.group(1))
                break
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        if port is None:
            print(f"error: the server did not start:\n{open(log_path).read()}", file=sys.stderr)
            return 1
        (worker,) = children(proc.pid)
        # Warm up: a normal request and one whole download.
        get(port, "/")
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(REQUEST % b"/static/big.bin")
            r = Response()
            while not r.feed(s.recv(1 << 20)):
                pass
        idle = settle(worker, 3)
        base = sockets(worker)
        print(f"worker rss idle: {idle} KiB", flush=True)
        req = REQUEST % b"/static/big.bin"
        t0 = time.monotonic()
        for _ in range(a.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # A tiny window, set before connecting: the client never reads, and its receive
            # buffer takes almost nothing of the response.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect(("127.0.0.1", port))
            s.sendall(req)
            slow.append(s)
        print(f"{a.count} never-reading clients connected in {time.monotonic() - t0:.1f} s",
              flush=True)
        during = settle(worker, 20)
        print(f"worker rss while they are held: {during} KiB "
              f"({(during - idle) * 1024 // a.count} bytes per client)", flush=True)
        lat = normal_latencies(port)
        ok = [x for x in lat if x is not None]
        failed = len(lat) - len(ok)
        if ok:
            ok.sort()
            print(f"normal requests meanwhile: {len(ok)} ok, {failed} failed; ms median "
                  f"{ok[len(ok) // 2]:.2f} max {ok[-1]:.2f}", flush=True)
        else:
            print(f"normal requests meanwhile: all {failed} failed", flush=True)
        t1 = time.monotonic()
        if a.closed_by == "client":
            linger = struct.pack("ii", 1, 0)
            for s in slow:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                s.close()
            slow = []
        else:
            # Wait for the server to close them: its worker's sockets are counted (the
            # clients' ends would show the close only after reading all that the kernel
            # still holds for them, through a 1 KiB window).
            end = t1 + (a.send_timeout or 60) + 30
            while sockets(worker) > base and time.monotonic() < end:
                time.sleep(0.1)
            left = max(sockets(worker) - base, 0)
            print(f"closed by the server: {a.count - left} of {a.count} within "
                  f"{time.monotonic() - t1:.1f} s (send_timeout {a.send_timeout or 'default'})",
                  flush=True)
        after = settle(worker, 10, quiet=2.0)
        print(f"worker rss after they are gone: {after} KiB", flush=True)
        return 0 if failed == 0 else 1
    finally:
        for s in slow:
            s.close()
        stop_group(proc)
        proc.wait()


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd_name", required=True)
    g = sub.add_parser("get")
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--path", default="/")
    f = sub.add_parser("first-response")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--cpus")
    f.add_argument("--prober-cpus")
    f.add_argument("--pgid-file")
    f.add_argument("--log")
    f.add_argument("--timeout", type=float, default=10.0)
    f.add_argument("cmd", nargs=argparse.REMAINDER)
    r = sub.add_parser("reload")
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--workers", type=int, required=True)
    r.add_argument("--log")
    r.add_argument("--nginx", action="store_true")
    r.add_argument("--timeout", type=float, default=10.0)
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--count", type=int, default=10000)
    i.add_argument("--window", type=int, default=256)
    i.add_argument("--timeout", type=float, default=60.0)
    w = sub.add_parser("slow-readers")
    w.add_argument("--bin", required=True)
    w.add_argument("--count", type=int, default=1000)
    w.add_argument("--size-mb", type=int, default=5)
    w.add_argument("--send-timeout", type=int)
    w.add_argument("--closed-by", choices=["client", "server"], default="client")
    a = p.parse_args()
    if a.cmd_name == "first-response" and a.cmd and a.cmd[0] == "--":
        a.cmd = a.cmd[1:]
    if a.cmd_name == "reload" and not (a.log or a.nginx):
        p.error("reload: --log FILE (forkserve) or --nginx")
    return {"get": cmd_get, "first-response": cmd_first_response, "reload": cmd_reload,
            "idle": cmd_idle, "slow-readers": cmd_slow_readers}[a.cmd_name](a)


if __name__ == "__main__":
    sys.exit(main())
