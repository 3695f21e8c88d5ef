"""A WSGI app for the supervision and slow-client tests: endpoints that sleep, get stuck, exit,
hold the GIL, or answer large bodies.

With `STEAL_SIGNALS=1` in the environment, importing it sets Python handlers for TERM, INT and
HUP (as some apps and libraries do), which forkserve must take back.
"""

import ctypes
import os
import signal
import sys
import time

if os.environ.get("STEAL_SIGNALS") == "1":
    def _stolen(signum, frame):
        sys.stderr.write(f"STOLEN-SIGNAL {signum}\n")

    for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(_sig, _stolen)

REQUESTS = 0


def query(environ):
    return dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)


def stuck_here(seconds):
    # Said on stderr (the server's log), so that a test knows the request is in Python.
    print(f"entered stuck_here in {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(seconds)


def hold_the_gil(seconds):
    # libc's sleep through PyDLL, which (unlike CDLL) keeps the GIL for the call: every other
    # Python thread of the process stops, as with a C extension that never releases it.
    ctypes.PyDLL(None).sleep(int(seconds))


def app(environ, start_response):
    global REQUESTS
    REQUESTS += 1
    path, q = environ["PATH_INFO"], query(environ)
    body = b"ok"
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/count":
        body = f"{os.getpid()} {REQUESTS}".encode()
    elif path == "/sleep":
        print(f"sleeping in {os.getpid()}", file=sys.stderr, flush=True)
        time.sleep(float(q.get("s", "0.5")))
        body = str(os.getpid()).encode()
    elif path == "/stuck":
        stuck_here(float(q.get("s", "60")))
    elif path == "/gil":
        hold_the_gil(float(q.get("s", "5")))
    elif path == "/exit":
        sys.exit(3)
    elif path == "/os-exit":
        os._exit(7)
    elif path == "/big":
        body = b"b" * int(q.get("n", str(1 << 20)))
    elif path == "/short":
        # Fewer bytes than the Content-Length it declares: whole (a list) or in pieces.
        pieces = [b"piece-%d;" % i for i in range(int(q.get("pieces", "3")))]
        start_response("200 OK", [("Content-Length", q.get("declared", "100"))])
        return pieces if q.get("whole") else iter(pieces)
    elif path == "/gen":
        n, piece = int(q.get("n", str(1 << 20))), b"g" * 65536
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (piece[: min(65536, n - at)] for at in range(0, n, 65536))
    elif path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
