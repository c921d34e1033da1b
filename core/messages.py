"""Django's messages framework, built only for the requests that use it.

MessageMiddleware builds its storage (a cookie store and a session store) on every request,
although only admin pages add or read messages: on API requests that was about 5 % of the
web process's profile samples (docs/performance.md, cost per order). Here the storage is built on first
use, and a response whose request never touched it has nothing to save.
"""

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject, empty


class LazyMessageMiddleware(MessageMiddleware):
    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response  # never read nor added to: nothing to store
        return super().process_response(request, response)
