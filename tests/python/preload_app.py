"""A WSGI app for the preload tests (tests/python_preload.rs): it builds a large object when it
is imported, and answers with what tells its workers apart and what they share: the pid that
imported it (the mold's, with preload; the worker's own, without) and the object's address."""

import os

# The tests rewrite this line to see that a reload loads new code.
VERSION = "one"

# About 30 MB of small objects, built once, when the module is imported.
BIG = [str(i) * 8 for i in range(300_000)]
IMPORTED_IN = os.getpid()


def app(environ, start_response):
    body = (
        f"version={VERSION} pid={os.getpid()} imported_in={IMPORTED_IN} big={id(BIG)}\n"
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
