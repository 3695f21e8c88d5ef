"""The routes, named so that views can reverse() them under any SCRIPT_NAME."""

from django.urls import path

from . import views

urlpatterns = [
    path("hello", views.hello, name="hello"),
    path("items/<int:item_id>", views.item, name="item"),
    path("query", views.query, name="query"),
    path("cookie/set", views.cookie_set, name="cookie_set"),
    path("cookie/get", views.cookie_get, name="cookie_get"),
    path("form", views.form, name="form"),
    path("upload", views.upload, name="upload"),
    path("stream", views.stream, name="stream"),
    path("download", views.download, name="download"),
    path("caf\u00e9", views.cafe, name="cafe"),
    path("where", views.where, name="where"),
    path("client", views.client, name="client"),
    path("redirect", views.redirect_to_hello, name="redirect"),
    path("boom", views.boom, name="boom"),
    path("exit", views.exit_, name="exit"),
    path("os-exit", views.os_exit, name="os_exit"),
    path("sleep", views.sleep, name="sleep"),
    path("pid", views.pid, name="pid"),
    path("info", views.info, name="info"),
]
