"""Thin views for the web UI's own endpoints; each validates, calls one service or selector."""

from __future__ import annotations

from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import selectors as annotate_selectors
from annotate.permissions import IsStaff
from annotate.serializers import LeasedPairSerializer
from config.users import request_user
from web import selectors, services
from web.serializers import (
    LoginInputSerializer,
    MeSerializer,
    ProgressSerializer,
    RoundSummarySerializer,
    TokenOutputSerializer,
    UserCreateInputSerializer,
    UserRowSerializer,
    UserUpdateInputSerializer,
)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class LoginApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(request=LoginInputSerializer, responses={200: MeSerializer})
    def post(self, request: Request) -> Response:
        # DRF exempts views from CSRF; a login form still needs it (login CSRF).
        SessionAuthentication().enforce_csrf(request)
        data = LoginInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.session_login(request=request._request, **data.validated_data)
        return Response(MeSerializer(selectors.me(user=user)).data)


class LogoutApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        services.session_logout(request=request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(selectors.me(user=request_user(request))).data)


class ProgressApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ProgressSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = annotate_selectors.project_get_for_user(user=user, project_id=project_id)
        progress = selectors.annotator_progress(project=project, user=user)
        return Response(ProgressSerializer(progress).data)


class LeaseAheadApi(APIView):
    """Lease the pair after the one on screen (204 when none is left or one is already held)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: LeasedPairSerializer, 204: None})
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = annotate_selectors.project_get_for_user(user=user, project_id=project_id)
        assignment = services.assignment_lease_ahead(project=project, annotator=user)
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        view = annotate_selectors.assignment_for_annotator_view(assignment)
        return Response(LeasedPairSerializer(view).data)


class RoundSummaryApi(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(responses=RoundSummarySerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = annotate_selectors.project_get_for_user(
            user=request_user(request), project_id=project_id
        )
        rows = selectors.round_summaries(project=project)
        return Response(RoundSummarySerializer(rows, many=True).data)


class UserListApi(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(responses=UserRowSerializer(many=True))
    def get(self, request: Request) -> Response:
        rows = [selectors.user_row(u) for u in selectors.users_with_memberships()]
        return Response(UserRowSerializer(rows, many=True).data)

    @extend_schema(request=UserCreateInputSerializer, responses={201: UserRowSerializer})
    def post(self, request: Request) -> Response:
        data = UserCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        project = None
        if values.get("project_id") is not None:
            project = annotate_selectors.project_get_for_user(
                user=request_user(request), project_id=values["project_id"]
            )
        user = services.user_create(
            username=values["username"],
            password=values["password"],
            is_staff=values["is_staff"],
            project=project,
            role=values["role"],
            actor=request_user(request),
        )
        return Response(UserRowSerializer(selectors.user_row(user)).data, status=201)


class UserDetailApi(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(request=UserUpdateInputSerializer, responses={200: UserRowSerializer})
    def patch(self, request: Request, user_id: int) -> Response:
        data = UserUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_set_active(
            user_id=user_id,
            is_active=data.validated_data["is_active"],
            actor=request_user(request),
        )
        return Response(UserRowSerializer(selectors.user_row(user)).data)


class MembershipDeleteApi(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        project = annotate_selectors.project_get_for_user(
            user=request_user(request), project_id=project_id
        )
        services.membership_remove(project=project, user_id=user_id, actor=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenApi(APIView):
    permission_classes = [IsAuthenticated, IsStaff]

    @extend_schema(request=None, responses={201: TokenOutputSerializer})
    def post(self, request: Request, user_id: int) -> Response:
        token = services.token_rotate(user_id=user_id, actor=request_user(request))
        return Response({"user_id": user_id, "key": token.key}, status=201)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        services.token_revoke(user_id=user_id, actor=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
