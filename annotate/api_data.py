"""Bulk data API: import outside preference files, download exports as streamed files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, get_args

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import exporters, importers, selectors
from annotate.permissions import CanManageProject
from config.users import request_user
from config.validation import BoundedIntegerField, refuse_declared_oversize

NDJSON = "application/x-ndjson"
CSV = "text/csv; charset=utf-8"


class ImportInputSerializer(serializers.Serializer[Any]):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=importers.IMPORT_FORMATS)
    # Off by default: a published file stores its good rows and reports the rest.
    all_or_nothing = serializers.BooleanField(default=False)


class ImportResultSerializer(serializers.Serializer[Any]):
    format = serializers.CharField()
    rows_read = BoundedIntegerField()
    prompts_created = BoundedIntegerField()
    responses_created = BoundedIntegerField()
    comparisons_created = BoundedIntegerField()
    judgments_created = BoundedIntegerField()
    demonstrations_created = BoundedIntegerField(help_text="Format sft: written answers stored.")
    skipped_duplicates = BoundedIntegerField()
    skipped_identical = BoundedIntegerField()
    rows_failed = BoundedIntegerField()
    # DRF's metaclass moves declared fields off the class, so this does not replace the
    # `errors` property; mypy cannot see that.
    errors = serializers.ListField(child=serializers.DictField())  # type: ignore[assignment]
    empty_answers = BoundedIntegerField()
    warnings = serializers.ListField(child=serializers.DictField())


class ExportTrlQuerySerializer(serializers.Serializer[Any]):
    include_ties = serializers.BooleanField(default=False)
    resolution = serializers.ChoiceField(
        choices=get_args(selectors.LabelResolution), default="majority"
    )


class ProjectImportApi(APIView):
    """Upload a preference JSONL file; 201 when anything was stored, 200 for a repeat."""

    permission_classes = [IsAuthenticated, CanManageProject]
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="projects_import",
        request={"multipart/form-data": ImportInputSerializer},
        responses={201: ImportResultSerializer, 200: ImportResultSerializer},
    )
    def post(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        # Refuse an obviously oversized upload before Django spools it to disk.
        refuse_declared_oversize(request.META, importers.max_import_bytes())
        data = ImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = importers.preferences_import(
            project=project,
            file=data.validated_data["file"],
            format=data.validated_data["format"],
            all_or_nothing=data.validated_data["all_or_nothing"],
        )
        code = status.HTTP_201_CREATED if result.created_anything else status.HTTP_200_OK
        return Response(ImportResultSerializer(asdict(result)).data, status=code)


class _AnyAccept(DefaultContentNegotiation):
    """Downloads are not rendered by DRF, so `Accept: text/csv` must not be answered with 406.

    Errors raised before streaming starts are still rendered as JSON by the first renderer.
    """

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _download(lines: Iterator[str], *, filename: str, content_type: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(lines, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


class _DownloadApi(APIView):
    permission_classes = [IsAuthenticated]
    content_negotiation_class = _AnyAccept


class ExportTrlApi(_DownloadApi):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        operation_id="projects_export_trl",
        parameters=[
            OpenApiParameter(
                "include_ties",
                bool,
                description='Also emit ties, marked "tie": true (for reward-model training).',
            ),
            OpenApiParameter(
                "resolution",
                str,
                enum=list(get_args(selectors.LabelResolution)),
                description="How a pair's judgments become its label and weight: majority "
                "vote (weight = agreement) or the crowd model (weight = posterior).",
            ),
        ],
        responses={(200, NDJSON): OpenApiTypes.STR},
        description="Resolved pairs as TRL conversational preference JSONL; admins and clients.",
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        query = ExportTrlQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        lines = exporters.trl_jsonl_lines(
            project=project,
            include_ties=query.validated_data["include_ties"],
            resolution=query.validated_data["resolution"],
        )
        return _download(lines, filename=f"{project.slug}-trl.jsonl", content_type=NDJSON)


class ExportJudgmentsJsonlApi(_DownloadApi):
    @extend_schema(
        operation_id="projects_export_judgments_jsonl",
        responses={(200, NDJSON): OpenApiTypes.STR},
        description="Raw judgments; annotators get only their own.",
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        judgments = selectors.judgments_visible_to(user=user, project=project)
        lines = exporters.judgments_jsonl_lines(judgments=judgments)
        return _download(lines, filename=f"{project.slug}-judgments.jsonl", content_type=NDJSON)


class ExportJudgmentsCsvApi(_DownloadApi):
    @extend_schema(
        operation_id="projects_export_judgments_csv",
        responses={(200, "text/csv"): OpenApiTypes.STR},
        description="Raw judgments as CSV, formula cells neutralized; annotators get their own.",
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        judgments = selectors.judgments_visible_to(user=user, project=project)
        lines = exporters.judgments_csv_lines(judgments=judgments)
        return _download(lines, filename=f"{project.slug}-judgments.csv", content_type=CSV)


class ExportSftApi(_DownloadApi):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        operation_id="projects_export_sft",
        responses={(200, NDJSON): OpenApiTypes.STR},
        description="Accepted demonstrations as TRL conversational SFT JSONL ({messages}); "
        "admins and clients.",
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        lines = exporters.sft_jsonl_lines(project=project)
        return _download(lines, filename=f"{project.slug}-sft.jsonl", content_type=NDJSON)


class ExportKtoQuerySerializer(serializers.Serializer[Any]):
    desirable_score = BoundedIntegerField(
        min_value=1, max_value=7, default=5, help_text="A score from this up is desirable."
    )


class ExportKtoApi(_DownloadApi):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        operation_id="projects_export_kto",
        parameters=[ExportKtoQuerySerializer],
        responses={(200, NDJSON): OpenApiTypes.STR},
        description="Rated answers as TRL conversational unpaired-preference JSONL "
        "({prompt, completion, label}) for KTO; admins and clients.",
    )
    def get(self, request: Request, project_id: int) -> StreamingHttpResponse:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        query = ExportKtoQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        lines = exporters.kto_jsonl_lines(
            project=project, desirable_score=query.validated_data["desirable_score"]
        )
        return _download(lines, filename=f"{project.slug}-kto.jsonl", content_type=NDJSON)
