from django.urls import re_path

from instruments.consumers import LiveViewConsumer

from .consumers import EventConsumer

websocket_urlpatterns = [
    re_path(r"^ws/instruments/(?P<pk>\d+)/live/$", LiveViewConsumer.as_asgi()),
    re_path(r"^ws/(?P<kind>[a-z-]+)/(?P<pk>\d+)/$", EventConsumer.as_asgi()),
]
