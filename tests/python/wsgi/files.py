"""`wsgi.file_wrapper` without `wsgiref.validate` (whose iterator would hide the wrapper from
the server): `mode=noread` wraps a file whose `read()` raises, so a body that arrives whole
shows the server sent the file from its descriptor without Python copying it.
"""

import io
import os


class NoRead(io.FileIO):
    def read(self, *args):
        raise AssertionError("Python read the file: the server copied it through Python")

    readinto = read
    readall = read


class NoDescriptor(io.BytesIO):
    """A file-like that says it has no descriptor, as some wrappers do: -1."""

    def fileno(self):
        return -1


def app(environ, start_response):
    q = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    path, mode = q["path"], q.get("mode", "plain")
    if mode == "noread":
        f = NoRead(path, "r")
    elif mode == "nofd":
        with open(path, "rb") as whole:
            f = NoDescriptor(whole.read())
    elif mode == "bytesio":
        with open(path, "rb") as whole:
            f = io.BytesIO(whole.read())
    else:
        f = open(path, "rb")
        f.seek(int(q.get("at", "0")))
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in q:
        headers.append(("Content-Length", q["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 8192)
