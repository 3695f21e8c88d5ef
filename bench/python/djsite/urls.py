"""The admin (its login page needs no database), a template page and a JSON endpoint."""
from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("api/items/<int:item_id>", views.item),
    path("admin/", admin.site.urls),
]
