"""OpenAPI generation (drf-spectacular) adapted to nested Input/Output serializers.

Every view nests its own `InputSerializer` / `OutputSerializer` (HackSoft style), so
the class names repeat; components are named after the view instead:
`OrderCollectionApi.InputSerializer` -> `OrderCollectionInput`.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer: serializers.Serializer[Any], direction: Any) -> str:
        owner, _, name = type(serializer).__qualname__.rpartition(".")
        if owner:
            return owner.removesuffix("Api") + name
        return name


def drop_slash_duplicates(
    endpoints: list[tuple[str, str, str, Any]], **_: Any
) -> list[tuple[str, str, str, Any]]:
    """/api/orders and /api/orders/ are one collection: document it once, with the slash."""
    paths = {path for path, *_ in endpoints}
    return [e for e in endpoints if not (not e[0].endswith("/") and f"{e[0]}/" in paths)]
