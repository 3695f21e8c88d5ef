"""The hello-world WSGI apps bench/compare.sh serves under every Python server (PEP 3333 only).

`app` answers "Hello, World!" at once: what a server costs per request. `io_app` sleeps 10 ms
first, as a handler waiting on a database or another service does, to show whether a server
keeps its threads busy while 256 connections wait.
"""
import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def io_app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]
