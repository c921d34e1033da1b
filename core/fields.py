"""Serializer fields that accept what the published schema says, and nothing DRF would coerce.

DRF's CharField turns 12 into "12" and its IntegerField turns "12" or 12.0 into 12: friendly,
but then a request the OpenAPI schema calls invalid is accepted, and a client generated from
the schema and the server disagree about the API. These refuse the other JSON types (for
JSON bodies: form and query values are always strings).
Patterns are `\\A...\\Z` RegexValidators: exact in Python, and drf-spectacular publishes them
with ECMA anchors (`^...$`).
"""

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)  # " x" is not "x": the pattern decides
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)
