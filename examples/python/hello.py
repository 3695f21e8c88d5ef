"""A minimal WSGI app (PEP 3333, no packages needed): what config/python.toml serves, and the
Docker image runs.

    forkserve config/python.toml
    forkserve --wsgi hello:app --pythonpath examples/python     # the same without a config

GET / says hello; GET /python says which Python, virtualenv and worker serve it, to check
that a build or image runs the interpreter you expect.
"""

import os
import sys


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = "Hello, World!\n"
    elif path == "/python":
        body = (
            f"version: {sys.version.split()[0]}\n"
            f"prefix: {sys.prefix}\n"
            f"base_prefix: {sys.base_prefix}\n"
            f"pid: {os.getpid()}\n"
        )
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found\n"]
    data = body.encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
    )
    return [data]
