"""core.serializers.BuiltOnceModelSerializer: fields built from the model once per class, and
still one set of field objects per instance (nothing bound to one request reaches another)."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from core.serializers import BuiltOnceModelSerializer
from fx.models import FxRate

RATE = FxRate(
    base="EUR", quote="USD", rate=Decimal("1.0842"), as_of=datetime(2026, 12, 1, tzinfo=UTC), source="t"
)


def test_the_model_is_read_once_per_class(monkeypatch):
    built: list[str] = []
    original = serializers.ModelSerializer.build_field

    def counting(self: Any, field_name: str, *args: Any) -> Any:
        built.append(field_name)
        return original(self, field_name, *args)

    monkeypatch.setattr(serializers.ModelSerializer, "build_field", counting)

    class Rate(BuiltOnceModelSerializer[FxRate]):
        class Meta:
            model = FxRate
            fields = ["quote", "rate", "as_of"]

    # when three instances are used
    outputs = [Rate(RATE).data for _ in range(3)]
    # then the model's fields were built once, for the first, and each instance says the same
    assert built == ["quote", "rate", "as_of"]
    assert outputs == [{"quote": "USD", "rate": "1.0842000000", "as_of": "2026-12-01T00:00:00Z"}] * 3


def test_each_instance_binds_fields_of_its_own():
    class Rate(BuiltOnceModelSerializer[FxRate]):
        class Meta:
            model = FxRate
            fields = ["quote", "rate"]

    first, second = Rate(RATE, context={"who": 1}), Rate(RATE, context={"who": 2})
    for name in ("quote", "rate"):
        assert first.fields[name] is not second.fields[name]
        assert (first.fields[name].parent, second.fields[name].parent) == (first, second)
        assert (first.fields[name].context, second.fields[name].context) == ({"who": 1}, {"who": 2})


def test_the_output_is_what_a_plain_model_serializer_gives():
    class Built(BuiltOnceModelSerializer[FxRate]):
        class Meta:
            model = FxRate
            fields = ["base", "quote", "rate", "as_of", "source"]

    class Plain(serializers.ModelSerializer[FxRate]):
        class Meta:
            model = FxRate
            fields = ["base", "quote", "rate", "as_of", "source"]

    assert Built(RATE).data == Plain(RATE).data
    assert Built(data={"base": "EUR"}).is_valid() is Plain(data={"base": "EUR"}).is_valid() is False
