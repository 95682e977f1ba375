from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("ready", views.ready),
    path("admin/", admin.site.urls),
]
