"""The views: each answers with what it saw, as flask_app.py's routes do."""

import hashlib
import os
import sys
import time

import django
from django.http import (
    FileResponse,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views.decorators.http import require_safe, require_POST


def lists(querydict):
    return {key: values for key, values in querydict.lists()}


def json(data):
    """JSON as Flask's jsonify writes it (compact, keys sorted), so one test reads both apps."""
    return JsonResponse(data, json_dumps_params={"separators": (",", ":"), "sort_keys": True})


@require_safe
def hello(request):
    return HttpResponse("hello from django\n", content_type="text/plain")


@require_safe
def item(request, item_id):
    return json({"item": item_id, "kind": type(item_id).__name__})


@require_safe
def query(request):
    return json(lists(request.GET))


@require_safe
def cookie_set(request):
    response = HttpResponse("set\n", content_type="text/plain")
    for key, value in request.GET.items():
        response.set_cookie(key, value, path="/")
    return response


@require_safe
def cookie_get(request):
    return json(dict(request.COOKIES))


@require_POST
def form(request):
    return json(lists(request.POST))


@require_POST
def upload(request):
    """The uploaded file's name, size and sha256, read in chunks as Django hands them out."""
    upload = request.FILES["file"]
    digest, size = hashlib.sha256(), 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
    return json(
        {
            "filename": upload.name,
            "size": size,
            "sha256": digest.hexdigest(),
            "fields": lists(request.POST),
        }
    )


@require_safe
def stream(request):
    """`n` lines, one per yield, `delay` seconds apart (each followed by a line of `pad` dots, if
    given); with `mark`, the generator writes how it
    ended to $FORKSERVE_TEST_MARKS/`mark` when it is closed (Django closes it in the response's
    close(), which the server must call on every path, a client that left included)."""
    n = int(request.GET.get("n", 5))
    delay = float(request.GET.get("delay", 0))
    mark = request.GET.get("mark")
    pad = int(request.GET.get("pad", 0))
    fail_at = int(request.GET.get("fail_at", -1))

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

    return StreamingHttpResponse(lines(), content_type="text/plain")


@require_safe
def download(request):
    """The file named by $FORKSERVE_TEST_DOWNLOAD (this file when unset), as a FileResponse,
    which Django hands to the server's wsgi.file_wrapper."""
    path = os.environ.get("FORKSERVE_TEST_DOWNLOAD", __file__)
    response = FileResponse(
        open(path, "rb"), as_attachment=True, content_type="application/octet-stream"
    )
    response["X-File-Wrapper"] = repr(request.META.get("wsgi.file_wrapper"))
    return response


@require_safe
def cafe(request):
    return json({"path": request.path, "raw": request.META["PATH_INFO"]})


@require_safe
def where(request):
    """Where the app thinks it is mounted: the URLs it builds carry SCRIPT_NAME."""
    return json(
        {
            "script_name": request.META.get("SCRIPT_NAME", ""),
            "path_info": request.META.get("PATH_INFO", ""),
            "url_for": reverse("where"),
            "url_for_external": request.build_absolute_uri(reverse("where")),
            "item_url": reverse("item", kwargs={"item_id": 7}),
        }
    )


@require_safe
def client(request):
    """Who the app thinks its client is, and how it was reached."""
    return json(
        {
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
            "host_url": request.build_absolute_uri("/"),
            "x_forwarded_for": request.headers.get("X-Forwarded-For"),
        }
    )


@require_safe
def redirect_to_hello(request):
    return HttpResponseRedirect(reverse("hello"))


@require_safe
def boom(request):
    raise RuntimeError("boom from django")


@require_safe
def exit_(request):
    sys.exit(int(request.GET.get("code", 0)))


@require_safe
def os_exit(request):
    os._exit(int(request.GET.get("code", 7)))


@require_safe
def sleep(request):
    seconds = float(request.GET.get("s", 0))
    # Said on stderr (the server's log), so that a test knows the request is in the app.
    print(f"sleeping in {os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(seconds)
    return json({"pid": os.getpid(), "slept": seconds})


@require_safe
def pid(request):
    return HttpResponse(f"{os.getpid()}\n", content_type="text/plain")


@require_safe
def info(request):
    """Which Python and which Django serve this request."""
    meta = request.META
    return json(
        {
            "django_file": django.__file__,
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "executable": sys.executable,
            "version": sys.version,
            "file_wrapper": repr(meta.get("wsgi.file_wrapper")),
            "multithread": meta.get("wsgi.multithread"),
            "multiprocess": meta.get("wsgi.multiprocess"),
            "run_once": meta.get("wsgi.run_once"),
            "url_scheme": meta.get("wsgi.url_scheme"),
            "server_protocol": meta.get("SERVER_PROTOCOL"),
        }
    )
