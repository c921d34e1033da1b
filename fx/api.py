"""FX API: GET /api/fx/rates?base=EUR, the latest rates for a base currency."""

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import raises
from core.serializers import BuiltOnceModelSerializer
from fx.errors import RatesUnavailable
from fx.models import FxRate
from fx.selectors import last_synced_at, latest_rates, rates_are_stale


def any_case(codes: list[str]) -> RegexValidator:
    """One of `codes` in any case ("eur" works), as a pattern a schema can publish (no flags)."""
    spelled = "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in code) for code in codes)
    return RegexValidator(rf"\A(?:{spelled})\Z", f"One of {', '.join(codes)}.")


class FxRatesApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        base = serializers.CharField(
            required=False,
            min_length=3,
            max_length=3,
            validators=[any_case(settings.FX_CURRENCIES)],
            help_text=f"Default {settings.FX_BASE_CURRENCY}.",
        )

        def validate_base(self, value: str) -> str:
            code = value.upper()
            if code not in settings.FX_CURRENCIES:
                raise serializers.ValidationError(
                    f"Unknown currency {value!r}; one of {', '.join(settings.FX_CURRENCIES)}."
                )
            return code

    class OutputSerializer(serializers.Serializer[Any]):
        class RateSerializer(BuiltOnceModelSerializer[FxRate]):
            class Meta:
                model = FxRate
                fields = ["quote", "rate", "as_of", "source"]

        base = serializers.CharField()
        as_of = serializers.DateTimeField(help_text="The provider's time of these rates (UTC).")
        synced_at = serializers.DateTimeField(help_text="When the last successful sync stored rates.")
        stale = serializers.BooleanField(help_text="The last successful sync is older than 2 hours.")
        rates = RateSerializer(many=True)

    @extend_schema(parameters=[InputSerializer], responses=OutputSerializer)
    @raises(RatesUnavailable)
    def get(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        base = data.validated_data.get("base", settings.FX_BASE_CURRENCY)
        rates = list(latest_rates(base=base))
        if not rates:
            raise RatesUnavailable(f"No rates for {base} yet; the hourly sync stores them.")
        body = {
            "base": base,
            "as_of": rates[0].as_of,
            "synced_at": last_synced_at(),
            "stale": rates_are_stale(),
            "rates": rates,
        }
        return Response(self.OutputSerializer(body).data)
