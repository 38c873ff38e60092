"""Thin API views: validate input, call one service or selector, serialize the output."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import selectors, services
from annotate.serializers import (
    ProjectCreateInputSerializer,
    ProjectOutputSerializer,
    PromptBatchInputSerializer,
    PromptBatchOutputSerializer,
    PromptOutputSerializer,
)
from config.errors import ApplicationError


class ProjectListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ProjectOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(
            selectors.projects_visible_to(request.user).order_by("id"), request, view=self
        )
        return paginator.get_paginated_response(ProjectOutputSerializer(page, many=True).data)

    @extend_schema(request=ProjectCreateInputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request: Request) -> Response:
        if not request.user.is_staff:
            raise ApplicationError(
                "Only admins create projects.", code="forbidden", http_status=403
            )
        data = ProjectCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(**data.validated_data)
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request.user, project_id=project_id)
        return Response(ProjectOutputSerializer(project).data)


class PromptListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=PromptOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request.user, project_id=project_id)
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(
            selectors.prompts_of_project(project=project), request, view=self
        )
        return paginator.get_paginated_response(PromptOutputSerializer(page, many=True).data)

    @extend_schema(
        request=PromptBatchInputSerializer,
        responses={201: PromptBatchOutputSerializer, 200: PromptBatchOutputSerializer},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request.user, project_id=project_id)
        if not selectors.user_can_manage_prompts(user=request.user, project=project):
            raise ApplicationError(
                "Only admins and the project's API clients add prompts.",
                code="forbidden",
                http_status=403,
            )
        data = PromptBatchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.prompts_create(
            project=project,
            rows=data.validated_data["prompts"],
            source=data.validated_data["source"],
        )
        body = {
            "created": len(result.created),
            "unchanged": len(result.unchanged),
            "prompt_ids": [p.pk for p in result.created + result.unchanged],
        }
        return Response(body, status=status.HTTP_201_CREATED if result.created else 200)
