"""ModelSerializers whose fields are built from the model once per class, not once per instance.

DRF's ModelSerializer.get_fields() reads the model's fields and builds a serializer field for
each on every instantiation: for an order with its lines (two serializers, thirteen model
fields) that introspection was the largest serializer cost in a profile of 500 creates. The
fields of these serializers depend on the class alone, so the first instance's result is kept
as a template and every instance gets a deep copy of it: the isolation DRF itself gives
declared fields (nothing bound to one request is shared with another). A serializer whose
fields depend on its context or instance must not use this.
"""

import copy
from typing import Any, ClassVar, TypeVar

from django.db.models import Model
from rest_framework import serializers
from rest_framework.fields import Field

M = TypeVar("M", bound=Model)


class BuiltOnceModelSerializer(serializers.ModelSerializer[M]):
    _templates: ClassVar[dict[type, dict[str, Field[Any, Any, Any, Any]]]] = {}

    def get_fields(self) -> dict[str, Field[Any, Any, Any, Any]]:
        template = self._templates.get(type(self))
        if template is None:  # two threads racing here both build it: harmless, same result
            template = self._templates.setdefault(type(self), super().get_fields())
        return copy.deepcopy(template)
