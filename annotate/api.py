"""Thin API views: validate input, call one service or selector, serialize the output."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate import selectors, services
from annotate.feedback import feedback_type
from annotate.models import FeedbackKind
from annotate.permissions import CanManageProject, CanSeeProject, IsStaff, StaffForWrites
from annotate.serializers import (
    AnnotatorHistorySerializer,
    ComparisonDetailSerializer,
    ComparisonFilterSerializer,
    ComparisonOutputSerializer,
    DemonstrationFilterSerializer,
    DemonstrationOutputSerializer,
    DemonstrationReviewInputSerializer,
    DemonstrationSubmitInputSerializer,
    DemonstrationSubmittedSerializer,
    ExternalComparisonInputSerializer,
    JudgmentOutputSerializer,
    JudgmentSubmitInputSerializer,
    JudgmentSubmittedSerializer,
    LeasedPairSerializer,
    MembershipInputSerializer,
    MembershipOutputSerializer,
    PauseInputSerializer,
    ProjectCreateInputSerializer,
    ProjectOutputSerializer,
    ProjectStatisticsSerializer,
    ProjectUpdateInputSerializer,
    PromptBatchInputSerializer,
    PromptBatchOutputSerializer,
    PromptOutputSerializer,
    PromptUploadInputSerializer,
    RankingSubmitInputSerializer,
    RankingSubmittedSerializer,
    RatingSubmitInputSerializer,
    RatingSubmittedSerializer,
    SubmitEnvelopeSerializer,
)
from config.errors import ApplicationError
from config.pagination import paginated, paginated_response
from config.users import User, request_user
from config.validation import query_int, refuse_declared_oversize, too_large


class ProjectListApi(APIView):
    permission_classes = [IsAuthenticated, StaffForWrites]

    @extend_schema(operation_id="projects_list", responses=paginated(ProjectOutputSerializer))
    def get(self, request: Request) -> Response:
        return paginated_response(
            request,
            self,
            selectors.projects_visible_to(request_user(request)).order_by("id"),
            ProjectOutputSerializer,
        )

    @extend_schema(request=ProjectCreateInputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request: Request) -> Response:
        data = ProjectCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(**data.validated_data)
        return Response(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        return Response(ProjectOutputSerializer(project).data)

    @extend_schema(request=ProjectUpdateInputSerializer, responses=ProjectOutputSerializer)
    def patch(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        if not user.is_staff:
            raise ApplicationError(
                "Only admins change a project's settings.", code="forbidden", http_status=403
            )
        data = ProjectUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        updated = services.project_update(
            project=project, changes=dict(data.validated_data), actor=user
        )
        return Response(ProjectOutputSerializer(updated).data)


class PromptListApi(APIView):
    def get_permissions(self) -> list[BasePermission]:
        # Members read the prompts; adding them is for admins and the project's API clients.
        extra: list[BasePermission] = (
            [] if self.request.method in SAFE_METHODS else [CanManageProject()]
        )
        return [IsAuthenticated(), *extra]

    @extend_schema(responses=paginated(PromptOutputSerializer))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        return paginated_response(
            request, self, selectors.prompts_of_project(project=project), PromptOutputSerializer
        )

    @extend_schema(
        request=PromptBatchInputSerializer,
        responses={201: PromptBatchOutputSerializer, 200: PromptBatchOutputSerializer},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        data = PromptBatchInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.prompts_create(
            project=project,
            rows=data.validated_data["prompts"],
            source=data.validated_data["source"],
            all_or_nothing=data.validated_data["all_or_nothing"],
        )
        return intake_response(result)


def intake_response(result: services.PromptIntakeResult) -> Response:
    body = {
        "created": len(result.created),
        "unchanged": len(result.unchanged),
        "prompt_ids": [p.pk for p in result.created + result.unchanged],
        "errors": result.errors,
    }
    return Response(body, status=status.HTTP_201_CREATED if result.created else 200)


class PromptUploadApi(APIView):
    """Prompts from an uploaded JSONL or CSV file, with the same rules as the JSON intake."""

    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        request={"multipart/form-data": PromptUploadInputSerializer},
        responses={201: PromptBatchOutputSerializer, 200: PromptBatchOutputSerializer},
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        limit = settings.MAX_IMPORT_BYTES
        refuse_declared_oversize(request.META, limit)  # before Django reads the body
        data = PromptUploadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > limit:  # spooled to disk by now, never read into memory
            raise too_large(limit, "The file")
        rows = services.prompt_rows_from_file(content=upload.read(), filename=upload.name)
        result = services.prompts_create(
            project=project,
            rows=rows,
            source=data.validated_data["source"],
            all_or_nothing=data.validated_data["all_or_nothing"],
        )
        return intake_response(result)


def next_pair_view(user: User, project_id: int) -> dict[str, Any] | None:
    """Lease the user's next pair in a project and show it blind; None when nothing is left."""
    assignment = services.assignment_lease_next_in(project_id=project_id, annotator=user)
    return None if assignment is None else selectors.assignment_for_annotator_view(assignment)


class NextPairApi(APIView):
    """Lease the next pair to judge; 204 when there is nothing left for this annotator."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]  # POST-only: no browsable page, no negotiation per call

    @extend_schema(request=None, responses={200: LeasedPairSerializer, 204: None})
    def post(self, request: Request, project_id: int) -> Response:
        view = next_pair_view(request_user(request), project_id)
        if view is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(view)  # already plain JSON values, in LeasedPairSerializer's shape


# One submit for every feedback type: the request and the answer are one of these shapes.
SUBMIT_REQUEST = PolymorphicProxySerializer(
    component_name="FeedbackSubmitInput",
    serializers=[
        JudgmentSubmitInputSerializer,
        DemonstrationSubmitInputSerializer,
        RatingSubmitInputSerializer,
        RankingSubmitInputSerializer,
    ],
    resource_type_field_name=None,
)
SUBMIT_RESPONSE = PolymorphicProxySerializer(
    component_name="FeedbackSubmitted",
    serializers=[
        JudgmentSubmittedSerializer,
        DemonstrationSubmittedSerializer,
        RatingSubmittedSerializer,
        RankingSubmittedSerializer,
    ],
    resource_type_field_name=None,
)


class SubmitJudgmentApi(APIView):
    """Record a judgment; with lease_next, also lease the next pair in the same round trip."""

    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]

    @extend_schema(
        request=SUBMIT_REQUEST,
        responses={201: SUBMIT_RESPONSE, 200: SUBMIT_RESPONSE},
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        # The generic fields say the kind; the kind's own serializer reads the rest.
        envelope = SubmitEnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        kind = envelope.validated_data.get("kind", FeedbackKind.PAIRWISE)
        feedback = feedback_type(kind)
        fields = feedback.submit_input(data=request.data)
        fields.is_valid(raise_exception=True)
        result = services.feedback_submit(
            assignment_id=assignment_id,
            annotator=request_user(request),
            kind=kind,
            submission_key=envelope.validated_data.get("submission_key"),
            values=dict(fields.validated_data),
        )
        lease_next = envelope.validated_data.get("lease_next", False)
        body = feedback.submitted_view(result.judgment)
        if lease_next:
            # The judgment is committed already; a failure to lease (a pause, say) is reported
            # beside it and never turns the stored judgment into an error.
            try:
                body["next"] = next_pair_view(request_user(request), result.project_id)
            except ApplicationError as error:
                body["next"] = None
                body["next_error"] = {"error": error.code, "detail": error.message}
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(body, status=code)


class SkipPairApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, assignment_id: int) -> Response:
        services.assignment_skip(assignment_id=assignment_id, annotator=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ReleasePairApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, assignment_id: int) -> Response:
        services.assignment_release(assignment_id=assignment_id, annotator=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class JudgmentListApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses=paginated(JudgmentOutputSerializer))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        return paginated_response(
            request,
            self,
            selectors.judgments_visible_to(user=request_user(request), project=project),
            JudgmentOutputSerializer,
        )


class StatisticsApi(APIView):
    """Agreement (percent, Krippendorff's alpha) and the per-annotator quality table."""

    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        parameters=[OpenApiParameter("round", int, required=False)],
        responses=ProjectStatisticsSerializer,
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        round_number = query_int(request.query_params, "round", minimum=1)
        stats = selectors.project_statistics(project=project, round_number=round_number)
        return Response(ProjectStatisticsSerializer(stats).data)


class AnnotatorPauseApi(APIView):
    permission_classes = [IsAuthenticated, CanSeeProject, IsStaff]

    @extend_schema(request=PauseInputSerializer, responses={200: PauseInputSerializer})
    def post(self, request: Request, project_id: int, user_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        data = PauseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.annotator_set_paused(
            project=project,
            user_id=user_id,
            paused=data.validated_data["paused"],
            actor=request_user(request),
        )
        return Response({"paused": membership.paused})


class ComparisonListApi(APIView):
    """List a project's comparisons (managers), or add a pair of outside answers to judge."""

    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(
        parameters=[ComparisonFilterSerializer], responses=paginated(ComparisonOutputSerializer)
    )
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        filters = ComparisonFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        comparisons = selectors.comparisons_of_project(
            project=project,
            status=filters.validated_data.get("status"),
            round_number=filters.validated_data.get("round"),
        )
        return paginated_response(request, self, comparisons, ComparisonOutputSerializer)

    @extend_schema(
        request=ExternalComparisonInputSerializer, responses={201: ComparisonOutputSerializer}
    )
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        data = ExternalComparisonInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        comparison = services.comparison_create_external(
            project=project,
            prompt_id=values["prompt_id"],
            text_a=values["answer_a"],
            text_b=values["answer_b"],
            model_a=values["model_a"],
            model_b=values["model_b"],
            priority=values["priority"],
            gold_outcome=values.get("gold_outcome"),
        )
        return Response(ComparisonOutputSerializer(comparison).data, status=201)


class ComparisonDetailApi(APIView):
    """One pair with every judgment and rationale on it, for the project's managers."""

    permission_classes = [IsAuthenticated, CanManageProject]

    @extend_schema(responses=ComparisonDetailSerializer)
    def get(self, request: Request, project_id: int, comparison_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        detail = selectors.comparison_detail(project=project, comparison_id=comparison_id)
        return Response(ComparisonDetailSerializer(detail).data)


class MyHistoryApi(APIView):
    """The signed-in annotator's own record in a project: gold accuracy, agreement, latest."""

    permission_classes = [IsAuthenticated, CanSeeProject]

    @extend_schema(responses=AnnotatorHistorySerializer)
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        history = selectors.annotator_history(project=project, user=user)
        return Response(AnnotatorHistorySerializer(history).data)


class DemonstrationListApi(APIView):
    """The project's written answers, newest first; reviewers filter by review status."""

    permission_classes = [IsAuthenticated, CanSeeProject]

    @extend_schema(
        parameters=[DemonstrationFilterSerializer],
        responses=paginated(DemonstrationOutputSerializer),
    )
    def get(self, request: Request, project_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        filters = DemonstrationFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        rows = selectors.demonstrations_visible_to(
            user=user, project=project, review_status=filters.validated_data.get("review_status")
        )
        return paginated_response(request, self, rows, DemonstrationOutputSerializer)


class DemonstrationReviewApi(APIView):
    """Accept or reject a written answer waiting for review (not your own)."""

    permission_classes = [IsAuthenticated, CanSeeProject]

    @extend_schema(
        request=DemonstrationReviewInputSerializer, responses=DemonstrationOutputSerializer
    )
    def post(self, request: Request, project_id: int, demonstration_id: int) -> Response:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=project_id)
        data = DemonstrationReviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reviewed = services.demonstration_review(
            project=project,
            demonstration_id=demonstration_id,
            reviewer=user,
            accepted=data.validated_data["accepted"],
        )
        return Response(DemonstrationOutputSerializer(reviewed).data)


class MemberListApi(APIView):
    permission_classes = [IsAuthenticated, CanManageProject, StaffForWrites]

    @extend_schema(responses=MembershipOutputSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        members = selectors.members_of_project(project=project)
        return Response(MembershipOutputSerializer(members, many=True).data)

    @extend_schema(request=MembershipInputSerializer, responses={201: MembershipOutputSerializer})
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.project_get_for_user(user=request_user(request), project_id=project_id)
        data = MembershipInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = selectors.user_by_username(username=data.validated_data["username"])
        membership = services.membership_set(
            project=project,
            user=user,
            role=data.validated_data["role"],
            actor=request_user(request),
            shares_served_traffic=data.validated_data.get("shares_served_traffic"),
        )
        return Response(MembershipOutputSerializer(membership).data, status=201)
