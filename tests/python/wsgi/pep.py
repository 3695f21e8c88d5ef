"""A WSGI app for tests/python_wsgi.rs: each endpoint exercises one part of PEP 3333, and the
whole app runs inside `wsgiref.validate.validator`. Whatever the validator objects to (an
assertion, a warning, an iterator never closed) is recorded and printed as a line with
`WSGI-PROBLEM`, so that a test can ask `/problems` or read the server's log: no test passes
with a violation the validator saw.

`CLOSE_LOG` (an environment variable) names a file where every `close()` of a result this app
returned is appended as a line, so that a test sees close() called on every path.
"""

import json
import os
import sys
import threading
import time
import warnings
import zlib
from wsgiref.validate import validator

PROBLEMS = []
LOCK = threading.Lock()


def record(kind, text):
    line = f"WSGI-PROBLEM {kind}: {text}"
    with LOCK:
        PROBLEMS.append(line)
    sys.stderr.write(line + "\n")


def _showwarning(message, category, filename, lineno, file=None, line=None):
    record("warning", f"{category.__name__}: {message} ({filename}:{lineno})")


warnings.simplefilter("always")
warnings.showwarning = _showwarning


def _unraisable(u):
    record("unraisable", f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")


sys.unraisablehook = _unraisable


def closed(tag):
    path = os.environ.get("CLOSE_LOG")
    if path and tag:
        with open(path, "a") as f:
            f.write(tag + "\n")


def query(environ):
    out = {}
    for pair in environ.get("QUERY_STRING", "").split("&"):
        if "=" in pair:
            k, v = pair.split("=", 1)
            out[k] = v
    return out


def respond(start_response, body, status="200 OK", ctype="text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def as_lines(fields):
    """`key<TAB>value` lines, each value JSON-encoded (ASCII, so any character shows)."""
    return "".join(f"{k}\t{json.dumps(v)}\n" for k, v in sorted(fields.items())).encode()


class Closing:
    """An iterable with close(): `mode` "normal" yields `n` items; "raise" raises after the
    first; "forever" yields every 50 ms (for up to 20 s) until the client leaves."""

    def __init__(self, tag, mode, n=3):
        self.tag, self.mode, self.n, self.i = tag, mode, n, 0

    def __iter__(self):
        return self

    def __next__(self):
        self.i += 1
        if self.mode == "raise" and self.i > 1:
            raise ValueError("raised-while-iterating")
        if self.mode == "forever":
            if self.i > 400:
                raise StopIteration
            time.sleep(0.05)
            return b"x" * 1024
        if self.i > self.n:
            raise StopIteration
        return b"item-%d\n" % self.i

    def close(self):
        closed(self.tag)


def environ_endpoint(environ, start_response):
    shown = {k: v for k, v in environ.items() if isinstance(v, str)}
    for k in ("wsgi.version", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
              "wsgi.url_scheme", "wsgi.input_terminated"):
        shown[k] = environ.get(k)
    shown["has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    return respond(start_response, as_lines(shown))


def input_endpoint(environ, start_response):
    """Reads the body as `mode` says, hashing it as it goes (never holding it whole)."""
    q = query(environ)
    stream, mode = environ["wsgi.input"], q.get("mode", "read")
    if mode == "read":
        n = int(q.get("n", "4096"))
        pieces = iter(lambda: stream.read(n), b"")
    elif mode == "readline":
        size = int(q["size"]) if "size" in q else None
        pieces = iter(lambda: stream.readline() if size is None else stream.readline(size), b"")
    elif mode == "readlines":
        pieces = stream.readlines(int(q["hint"])) if "hint" in q else stream.readlines()
    else:
        pieces = stream
    checksum, count, length, first = 1, 0, 0, []
    for piece in pieces:
        checksum = zlib.adler32(piece, checksum)
        count += 1
        length += len(piece)
        if len(first) < 4:
            first.append(piece.decode("latin-1"))
    kib = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value = line.split(":")
                kib[name] = int(value.split()[0])
    return respond(start_response, as_lines({
        "count": count,
        "len": length,
        "adler32": checksum,
        "first": first,
        "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
        "VmHWM": kib.get("VmHWM"),
    }))


def errors_endpoint(environ, start_response):
    errors = environ["wsgi.errors"]
    errors.write("errors-line-one\n")
    errors.write("errors-partial ")
    errors.write("errors-completed\n")
    errors.writelines(["errors-many-1\n", "errors-many-2\n"])
    errors.write("errors-flushed")
    errors.flush()
    return respond(start_response, b"logged")


def exc_before(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
    try:
        raise ValueError("before-head")
    except ValueError:
        start_response("503 Replaced", [("Content-Type", "text/plain"), ("X-Second", "yes")],
                       sys.exc_info())
    return [b"replaced"]


def exc_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"first-part;"
        try:
            raise ValueError("after-head")
        except ValueError:
            try:
                start_response("500 Too Late", [("Content-Type", "text/plain")], sys.exc_info())
            except ValueError as again:
                environ["wsgi.errors"].write(f"exc-after: start_response re-raised {again!r}\n")
                raise
            environ["wsgi.errors"].write("exc-after: start_response did NOT re-raise\n")
        yield b"never"

    return body()


def write_endpoint(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three"]


def stream_endpoint(environ, start_response):
    q = query(environ)
    n, gap = int(q.get("n", "3")), float(q.get("gap", "0.3"))
    headers = [("Content-Type", "text/plain")]
    if q.get("declared"):
        # Each piece is 8 bytes while n <= 10: a length the app knows before it yields.
        declared = q["declared"]
        headers.append(("Content-Length", str(8 * n) if declared == "1" else declared))
    start_response("200 OK", headers)

    def body():
        for i in range(n):
            if i:
                time.sleep(gap)
            yield b"piece-%d;" % i

    return body()


def close_endpoint(environ, start_response):
    q = query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(q.get("tag"), q.get("mode", "normal"))


def file_endpoint(environ, start_response):
    f = open(query(environ)["path"], "rb")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 4096)


ROUTES = {
    "/environ": environ_endpoint,
    "/input": input_endpoint,
    "/errors": errors_endpoint,
    "/exc-before": exc_before,
    "/exc-after": exc_after,
    "/write": write_endpoint,
    "/stream": stream_endpoint,
    "/close": close_endpoint,
    "/file": file_endpoint,
}


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom-marker")
    if path == "/pid":
        return respond(start_response, str(os.getpid()).encode())
    if path == "/hello":
        return respond(start_response, b"hello, world\n")
    handler = ROUTES.get(path)
    if handler is None and (path.startswith("/environ") or path in ("", "/")):
        handler = environ_endpoint
    if handler is None:
        return respond(start_response, b"not found\n", "404 Not Found")
    return handler(environ, start_response)


LINTED = validator(inner)


class Checked:
    """The validator's iterator, with its assertions recorded."""

    def __init__(self, result):
        self.result = result
        self.iterator = iter(result)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.iterator)
        except AssertionError as e:
            record("error", f"while iterating: {e}")
            raise

    def close(self):
        try:
            self.result.close()
        except AssertionError as e:
            record("error", f"in close(): {e}")
            raise


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/problems":
        with LOCK:
            body = "".join(p + "\n" for p in PROBLEMS).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    try:
        result = LINTED(environ, start_response)
    except AssertionError as e:
        record("error", str(e))
        raise
    return Checked(result)
