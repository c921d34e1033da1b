"""Who am I, and token exchange. The only open API endpoint is the token exchange."""

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.login_guard import LoginGuard
from core.problems import ApplicationError
from core.schema import raises


class InvalidCredentials(ApplicationError):
    status_code = 400
    code = "invalid-credentials"
    title = "Invalid username or password"


class LoginLocked(ApplicationError):
    status_code = 429
    code = "login-locked"
    title = "Too many failed logins"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        id = serializers.IntegerField()
        username = serializers.CharField()

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


class TokenObtainApi(APIView):
    # Open by necessity: the credentials in the body are the authentication. Throttled, and
    # failed logins lock the address or the username out (core/login_guard.py).
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_scope = "auth"

    class InputSerializer(serializers.Serializer[Any]):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    class OutputSerializer(serializers.Serializer[Any]):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses=OutputSerializer)
    @raises(InvalidCredentials, LoginLocked)
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        guard = LoginGuard(request, data.validated_data["username"])
        if (wait := guard.locked_for()) is not None:
            raise LoginLocked(f"Too many failed logins; try again in {wait // 60} minutes.", retry_after=wait)
        user = authenticate(request, **data.validated_data)
        if user is None or not user.is_active:
            guard.failed()
            raise InvalidCredentials("Check the username and password and try again.")
        guard.succeeded()
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
