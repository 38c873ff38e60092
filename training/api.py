"""Thin API views for the loop: rounds, training runs and the model registry (admins steer)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import selectors as annotate_selectors
from annotate.models import Project
from annotate.permissions import CanManageProject, CanSeeProject, IsStaff, StaffForWrites
from annotate.serializers import RoundOutputSerializer
from config.errors import ApplicationError, NotFoundError
from config.pagination import paginated, paginated_response
from config.users import request_user
from config.validation import query_int
from registry import services as registry_services
from training import pipeline, selectors, services
from training.ai_judges import ai_judge_create, constitution_sha256
from training.models import AiJudge
from training.project_settings import (
    training_settings_update,
    training_settings_view,
)
from training.serializers import (
    AiJudgeInputSerializer,
    AiJudgeOutputSerializer,
    AiJudgeRunInputSerializer,
    MetricPointSerializer,
    ModelVersionOutputSerializer,
    PromoteInputSerializer,
    TrainingRunCreateInputSerializer,
    TrainingRunOutputSerializer,
    TrainingSettingsSerializer,
    TrainingSettingsViewSerializer,
)


def _project(request: Request, project_id: int) -> Project:
    return annotate_selectors.project_get_for_user(
        user=request_user(request), project_id=project_id
    )


class RunScoped:
    """Views addressed by a run: its project decides who may see it (CanManageProject)."""

    def project_id_for(self, kwargs: dict[str, Any]) -> int:
        return selectors.run_project_id(run_id=kwargs["run_id"])


class TrainingRunListApi(APIView):
    permission_classes = [IsAuthenticated, CanManageProject, StaffForWrites]

    @extend_schema(responses=paginated(TrainingRunOutputSerializer))
    def get(self, request: Request, project_id: int) -> Response:
        runs = selectors.runs_of_project(project=_project(request, project_id))
        return paginated_response(request, self, runs, TrainingRunOutputSerializer)

    @extend_schema(
        request=TrainingRunCreateInputSerializer, responses={201: TrainingRunOutputSerializer}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        data = TrainingRunCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        round_number, version_id = values.get("round"), values.get("version")
        run = services.training_run_create(
            project=project,
            kind=values["kind"],
            config=values["config"],
            round=None
            if round_number is None
            else selectors.round_get(project=project, number=round_number),
            created_by=request_user(request),
            chained=values["chain"],
            input_version=None
            if version_id is None
            else selectors.version_get(version_id=version_id, project=project),
        )
        return Response(TrainingRunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class TrainingRunDetailApi(RunScoped, APIView):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(responses=TrainingRunOutputSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunOutputSerializer(selectors.run_get(run_id=run_id)).data)


class TrainingRunMetricsApi(RunScoped, APIView):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(responses=MetricPointSerializer(many=True))
    def get(self, request: Request, run_id: int) -> Response:
        after = query_int(request.query_params, "after_step")
        points = selectors.run_metric_points(run=selectors.run_get(run_id=run_id), after_step=after)
        return Response(MetricPointSerializer(points, many=True).data)


class TrainingRunCancelApi(RunScoped, APIView):
    permission_classes = [IsAuthenticated, CanManageProject, IsStaff]

    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        run = services.training_run_cancel(run=selectors.run_get(run_id=run_id))
        return Response(TrainingRunOutputSerializer(run).data)


class TrainingRunRetryApi(RunScoped, APIView):
    permission_classes = [IsAuthenticated, CanManageProject, IsStaff]

    @extend_schema(request=None, responses=TrainingRunOutputSerializer)
    def post(self, request: Request, run_id: int) -> Response:
        run = services.training_run_retry(run=selectors.run_get(run_id=run_id))
        return Response(TrainingRunOutputSerializer(run).data)


class ModelVersionListApi(APIView):
    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        versions = selectors.versions_of_project(project=_project(request, project_id))
        return Response(ModelVersionOutputSerializer(versions, many=True).data)


class ModelVersionPromoteApi(APIView):
    """Make a version the active one of its kind; an older one is a rollback."""

    permission_classes = [IsAuthenticated, CanManageProject, IsStaff]

    def project_id_for(self, kwargs: dict[str, Any]) -> int:
        return selectors.version_project_id(version_id=kwargs["version_id"])

    @extend_schema(request=PromoteInputSerializer, responses=ModelVersionOutputSerializer)
    def post(self, request: Request, version_id: int) -> Response:
        data = PromoteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        promoted = registry_services.version_promote(
            version=selectors.version_get(version_id=version_id),
            actor=request_user(request),
            reason=data.validated_data["reason"],
        )
        return Response(ModelVersionOutputSerializer(promoted).data)


# --- Rounds: opening one queues its generation, closing one queues its training chain -------


class RoundListApi(APIView):
    permission_classes = [IsAuthenticated, CanSeeProject, StaffForWrites]

    @extend_schema(responses=RoundOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        rounds = selectors.rounds_of_project(project=_project(request, project_id))
        return Response(RoundOutputSerializer(rounds, many=True).data)

    @extend_schema(request=None, responses={201: RoundOutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        round_, _generation = pipeline.round_start(project=project, actor=request_user(request))
        return Response(RoundOutputSerializer(round_).data, 201)


class RoundCloseApi(APIView):
    permission_classes = [IsAuthenticated, CanSeeProject, IsStaff]

    @extend_schema(request=None, responses={200: RoundOutputSerializer})
    def post(self, request: Request, project_id: int, number: int) -> Response:
        round_ = selectors.round_get(project=_project(request, project_id), number=number)
        pipeline.round_finish(round=round_, actor=request_user(request))
        round_.refresh_from_db()
        return Response(RoundOutputSerializer(round_).data)


# --- Training settings: typed and checked when written -------------------------------------


class TrainingSettingsApi(APIView):
    """The settings every run of the project uses: values, the project's overrides, defaults."""

    permission_classes = [IsAuthenticated, CanManageProject, StaffForWrites]

    @extend_schema(responses=TrainingSettingsViewSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        return Response(training_settings_view(_project(request, project_id)))

    @extend_schema(
        request=TrainingSettingsSerializer,
        responses={200: TrainingSettingsViewSerializer},
        description="Replace the project's overrides: only the fields given differ from the "
        "defaults. Unknown fields and wrong types are a 400 that names each field.",
    )
    def put(self, request: Request, project_id: int) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("training settings must be an object.")
        project = training_settings_update(
            project=_project(request, project_id), values=request.data
        )
        return Response(training_settings_view(project))


# --- AI judges: annotators backed by a model ----------------------------------------------


def _judge_view(judge: AiJudge) -> dict[str, Any]:
    return {
        "id": judge.pk,
        "user_id": judge.user_id,
        "user": judge.user,
        "base_url": judge.base_url,
        "model": judge.model,
        "constitution": judge.constitution,
        "constitution_sha256": constitution_sha256(judge.constitution),
        "counts_toward_quota": judge.counts_toward_quota,
        "enabled": judge.enabled,
        "judgments": judge.judgments.count(),
        "created_at": judge.created_at,
    }


class AiJudgeListApi(APIView):
    """A project's AI judges (managers); admins add one. Their agreement with the humans is
    in the statistics' annotator table, under each judge's account."""

    permission_classes = [IsAuthenticated, CanManageProject, StaffForWrites]

    @extend_schema(responses=AiJudgeOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        judges = project.ai_judges.select_related("user")
        return Response(AiJudgeOutputSerializer([_judge_view(j) for j in judges], many=True).data)

    @extend_schema(request=AiJudgeInputSerializer, responses={201: AiJudgeOutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        data = AiJudgeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        judge = ai_judge_create(project=project, actor=request_user(request), **data.validated_data)
        return Response(AiJudgeOutputSerializer(_judge_view(judge)).data, status=201)


class AiJudgeRunApi(APIView):
    """Queue a judging pass over the open round's pairs (a worker calls the endpoint)."""

    permission_classes = [IsAuthenticated, CanSeeProject, IsStaff]

    @extend_schema(request=AiJudgeRunInputSerializer, responses={202: None})
    def post(self, request: Request, project_id: int, judge_id: int) -> Response:
        project = _project(request, project_id)
        judge = project.ai_judges.filter(pk=judge_id).first()
        if judge is None:
            raise NotFoundError(f"AI judge {judge_id} does not exist in this project.")
        data = AiJudgeRunInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.ai_judge_enqueue(judge_id=judge.pk, limit=data.validated_data["limit"])
        return Response(status=status.HTTP_202_ACCEPTED)
