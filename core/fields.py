"""Serializer fields that accept what the published schema says, and nothing DRF would coerce.

DRF's CharField turns 12 into "12" and its IntegerField turns "12" or 12.0 into 12: friendly,
but then a request the OpenAPI schema calls invalid is accepted, and a client generated from
the schema and the server disagree about the API. These refuse the other JSON types (for
JSON bodies: form and query values are always strings).
Patterns are `\\A...\\Z` RegexValidators: exact in Python, and drf-spectacular publishes them
with ECMA anchors (`^...$`).
"""

from typing import Any, ClassVar

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


class FixedChoiceField(serializers.ChoiceField):
    """A ChoiceField whose lookup tables are built once per process for each list of choices.

    DRF copies a serializer's declared fields for every instance, and each copy of a
    ChoiceField rebuilds its tables from the choices: for the 156 currency codes of an order
    line, about 3 % of the web process's profile samples (docs/performance.md). The tables are never
    mutated after they are built, so instances can share them. Choices must be hashable.
    """

    _tables: ClassVar[dict[tuple[Any, ...], tuple[Any, Any, dict[str, Any]]]] = {}

    def _set_choices(self, choices: Any) -> None:
        key = tuple(choices)
        tables = self._tables.get(key)
        if tables is None:  # two threads racing here both build the same tables: harmless
            super()._set_choices(key)
            tables = (self.grouped_choices, self._choices, self.choice_strings_to_values)
            self._tables.setdefault(key, tables)
        self.grouped_choices, self._choices, self.choice_strings_to_values = tables

    choices = property(serializers.ChoiceField._get_choices, _set_choices)
