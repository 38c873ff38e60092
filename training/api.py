"""Thin API views for the loop: rounds, training runs and the model registry (admins steer)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import selectors as annotate_selectors
from annotate.serializers import RoundOutputSerializer
from config.errors import ApplicationError, NotFoundError
from config.pagination import paginated, paginated_response
from registry import services as registry_services
from registry.models import ModelVersion
from training import pipeline, services
from training.models import TrainingRun
from training.project_settings import (
    training_settings_effective,
    training_settings_of,
    training_settings_update,
)
from training.serializers import (
    MetricPointSerializer,
    ModelVersionOutputSerializer,
    PromoteInputSerializer,
    TrainingRunCreateInputSerializer,
    TrainingRunOutputSerializer,
    TrainingSettingsSerializer,
)


def _require_admin(request: Request) -> None:
    if not request.user.is_staff:
        raise ApplicationError("Only admins do this.", code="forbidden", http_status=403)


def _visible_project(request: Request, project_id: int):
    project = annotate_selectors.project_get_for_user(user=request.user, project_id=project_id)
    if not annotate_selectors.user_can_manage_prompts(user=request.user, project=project):
        raise ApplicationError(
            "Only admins and the project's API clients see training.",
            code="forbidden",
            http_status=403,
        )
    return project


def _run_for(request: Request, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.select_related("project").filter(pk=run_id).first()
    if run is None:
        raise NotFoundError(f"Run {run_id} does not exist.")
    _visible_project(request, run.project_id)
    return run


class TrainingRunListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=paginated(TrainingRunOutputSerializer))
    def get(self, request: Request, project_id: int) -> Response:
        project = _visible_project(request, project_id)
        return paginated_response(
            request,
            self,
            TrainingRun.objects.filter(project=project).order_by("-id"),
            TrainingRunOutputSerializer,
        )

    @extend_schema(
        request=TrainingRunCreateInputSerializer, responses={201: TrainingRunOutputSerializer}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = _visible_project(request, project_id)
        _require_admin(request)
        data = TrainingRunCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        round_number = data.validated_data.get("round")
        round_ = None
        if round_number is not None:
            round_ = project.rounds.filter(number=round_number).first()
            if round_ is None:
                raise NotFoundError(f"Round {round_number} does not exist.")
        version = None
        version_id = data.validated_data.get("version")
        if version_id is not None:
            version = ModelVersion.objects.filter(pk=version_id, project=project).first()
            if version is None:
                raise NotFoundError(f"Version {version_id} does not exist in this project.")
        run = services.training_run_create(
            project=project,
            kind=data.validated_data["kind"],
            config=data.validated_data["config"],
            round=round_,
            created_by=request.user,
            chained=data.validated_data["chain"],
            input_version=version,
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=TrainingRunOutputSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunOutputSerializer(_run_for(request, run_id)).data)


class TrainingRunMetricsApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=MetricPointSerializer(many=True))
    def get(self, request: Request, run_id: int) -> Response:
        run = _run_for(request, run_id)
        points = run.metric_points.order_by("step", "split", "name")
        after = request.query_params.get("after_step")
        if after is not None:
            if not after.isdigit():
                raise ApplicationError("after_step must be a step number.")
            points = points.filter(step__gt=int(after))
        return Response(MetricPointSerializer(points, many=True).data)


class TrainingRunCancelApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        run = _run_for(request, run_id)
        _require_admin(request)
        return Response(TrainingRunOutputSerializer(services.training_run_cancel(run=run)).data)


class TrainingRunRetryApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        run = _run_for(request, run_id)
        _require_admin(request)
        return Response(TrainingRunOutputSerializer(services.training_run_retry(run=run)).data)


class ModelVersionListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = _visible_project(request, project_id)
        versions = ModelVersion.objects.filter(project=project).order_by("kind", "number")
        return Response(ModelVersionOutputSerializer(versions, many=True).data)


class ModelVersionPromoteApi(APIView):
    """Make a version the active one of its kind; an older one is a rollback."""

    permission_classes = [IsAuthenticated]

    @extend_schema(request=PromoteInputSerializer, responses=ModelVersionOutputSerializer)
    def post(self, request: Request, version_id: int) -> Response:
        version = ModelVersion.objects.filter(pk=version_id).first()
        if version is None:
            raise NotFoundError(f"Version {version_id} does not exist.")
        _visible_project(request, version.project_id)
        _require_admin(request)
        data = PromoteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        promoted = registry_services.version_promote(
            version=version, actor=request.user, reason=data.validated_data["reason"]
        )
        return Response(ModelVersionOutputSerializer(promoted).data)


# --- Rounds: opening one queues its generation, closing one queues its training chain -------


class RoundListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=RoundOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = annotate_selectors.project_get_for_user(user=request.user, project_id=project_id)
        rounds = project.rounds.order_by("number")
        return Response(RoundOutputSerializer(rounds, many=True).data)

    @extend_schema(request=None, responses={201: RoundOutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project = annotate_selectors.project_get_for_user(user=request.user, project_id=project_id)
        if not request.user.is_staff:
            raise ApplicationError("Only admins open rounds.", code="forbidden", http_status=403)
        round_, _generation = pipeline.round_start(project=project, actor=request.user)
        return Response(RoundOutputSerializer(round_).data, 201)


class RoundCloseApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: RoundOutputSerializer})
    def post(self, request: Request, project_id: int, number: int) -> Response:
        project = annotate_selectors.project_get_for_user(user=request.user, project_id=project_id)
        if not request.user.is_staff:
            raise ApplicationError("Only admins close rounds.", code="forbidden", http_status=403)
        round_ = project.rounds.filter(number=number).first()
        if round_ is None:
            raise NotFoundError(f"Round {number} does not exist.")
        pipeline.round_finish(round=round_, actor=request.user)
        round_.refresh_from_db()
        return Response(RoundOutputSerializer(round_).data)


# --- Training settings: typed and checked when written -------------------------------------


class TrainingSettingsApi(APIView):
    """The settings every run of the project uses, with the defaults filled in."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=TrainingSettingsSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        project = _visible_project(request, project_id)
        return Response(training_settings_effective(training_settings_of(project)))

    @extend_schema(
        request=TrainingSettingsSerializer,
        responses={200: TrainingSettingsSerializer},
        description="Replace the project's overrides: only the fields given differ from the "
        "defaults. Unknown fields and wrong types are a 400 that names each field.",
    )
    def put(self, request: Request, project_id: int) -> Response:
        project = _visible_project(request, project_id)
        _require_admin(request)
        project = training_settings_update(project=project, values=request.data)
        return Response(training_settings_effective(training_settings_of(project)))
