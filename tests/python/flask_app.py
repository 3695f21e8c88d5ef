"""A small Flask app for tests/python_flask.rs: each route exercises one thing a real app does
through the server (routing, query strings, cookies, forms, uploads, streaming, file downloads,
non-ASCII paths, a URL prefix, failures), and answers with what it saw so the test can compare.

The same routes, with the same answers, are in django_site/ for tests/python_django.rs.
"""

import hashlib
import os
import sys
import time

import flask
from flask import Flask, Response, jsonify, request, send_file, stream_with_context, url_for

app = Flask(__name__)
# Exceptions reach the server, as they do under Gunicorn when an app lets them out: the test is
# of the server's 500 and its log, not of Flask's error page.
app.config["PROPAGATE_EXCEPTIONS"] = True


@app.get("/hello")
def hello():
    return "hello from flask\n"


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(item=item_id, kind=type(item_id).__name__)


@app.get("/query")
def query():
    return jsonify({key: request.args.getlist(key) for key in request.args})


@app.get("/cookie/set")
def cookie_set():
    response = flask.make_response("set\n")
    for key, value in request.args.items():
        response.set_cookie(key, value, path="/")
    return response


@app.get("/cookie/get")
def cookie_get():
    return jsonify(dict(request.cookies))


@app.post("/form")
def form():
    return jsonify({key: request.form.getlist(key) for key in request.form})


@app.post("/upload")
def upload():
    """The uploaded file's name, size and sha256, read in pieces as an app with big files does."""
    upload = request.files["file"]
    digest, size = hashlib.sha256(), 0
    while piece := upload.stream.read(1 << 16):
        digest.update(piece)
        size += len(piece)
    return jsonify(
        filename=upload.filename,
        size=size,
        sha256=digest.hexdigest(),
        fields={key: request.form.getlist(key) for key in request.form},
    )


@app.get("/stream")
def stream():
    """`n` lines, one per yield, `delay` seconds apart (each followed by a line of `pad` dots, if
    given); with `mark`, the generator writes how it
    ended to $FORKSERVE_TEST_MARKS/`mark` when it is closed (PEP 3333: the server calls the
    iterable's close() on every path, a client that left included)."""
    n = request.args.get("n", 5, type=int)
    delay = request.args.get("delay", 0.0, type=float)
    mark = request.args.get("mark")
    pad = request.args.get("pad", 0, type=int)
    fail_at = request.args.get("fail_at", -1, type=int)

    def lines():
        sent = 0
        try:
            for i in range(n):
                if i and delay:
                    time.sleep(delay)
                if i == fail_at:
                    raise RuntimeError(f"stream failed after {i} lines")
                yield f"line {i}\n" + ("." * pad + "\n" if pad else "")
                sent += 1
        finally:
            if mark:
                ended = "complete" if sent == n else "stopped"
                with open(os.path.join(os.environ["FORKSERVE_TEST_MARKS"], mark), "w") as f:
                    f.write(f"{ended} {sent}\n")

    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/download")
def download():
    """The file named by $FORKSERVE_TEST_DOWNLOAD (this file when unset), through send_file,
    which hands it to the server's wsgi.file_wrapper."""
    path = os.environ.get("FORKSERVE_TEST_DOWNLOAD", __file__)
    response = send_file(path, mimetype="application/octet-stream", as_attachment=True)
    response.headers["X-File-Wrapper"] = repr(request.environ.get("wsgi.file_wrapper"))
    return response


@app.get("/caf\u00e9")
def cafe():
    return jsonify(path=request.path, raw=request.environ["PATH_INFO"])


@app.get("/where")
def where():
    """Where the app thinks it is mounted: the URLs it builds carry SCRIPT_NAME."""
    return jsonify(
        script_name=request.environ.get("SCRIPT_NAME", ""),
        path_info=request.environ.get("PATH_INFO", ""),
        url_for=url_for("where"),
        url_for_external=url_for("where", _external=True),
        item_url=url_for("item", item_id=7),
    )


@app.get("/client")
def client():
    """Who the app thinks its client is, and how it was reached."""
    return jsonify(
        remote_addr=request.remote_addr,
        scheme=request.scheme,
        host_url=request.host_url,
        x_forwarded_for=request.headers.get("X-Forwarded-For"),
    )


@app.get("/redirect")
def redirect_to_hello():
    return flask.redirect(url_for("hello"))


@app.get("/boom")
def boom():
    raise RuntimeError("boom from flask")


@app.get("/exit")
def exit_():
    sys.exit(int(request.args.get("code", 0)))


@app.get("/os-exit")
def os_exit():
    os._exit(int(request.args.get("code", 7)))


@app.get("/sleep")
def sleep():
    # Said on stderr (the server's log), so that a test knows the request is in the app.
    print(f"sleeping in {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(request.args.get("s", 0.0, type=float))
    return jsonify(pid=os.getpid(), slept=request.args.get("s", 0.0, type=float))


@app.get("/pid")
def pid():
    return f"{os.getpid()}\n"


@app.get("/info")
def info():
    """Which Python and which Flask serve this request."""
    environ = request.environ
    return jsonify(
        flask_file=flask.__file__,
        prefix=sys.prefix,
        base_prefix=sys.base_prefix,
        executable=sys.executable,
        version=sys.version,
        file_wrapper=repr(environ.get("wsgi.file_wrapper")),
        multithread=environ.get("wsgi.multithread"),
        multiprocess=environ.get("wsgi.multiprocess"),
        run_once=environ.get("wsgi.run_once"),
        url_scheme=environ.get("wsgi.url_scheme"),
        server_protocol=environ.get("SERVER_PROTOCOL"),
    )
