from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotate import api as annotate_api
from annotate.urls_data import data_patterns
from config.health import health
from training import api as training_api
from web import urls as web_urls

api_patterns = [
    path("projects/", annotate_api.ProjectListApi.as_view(), name="project-list"),
    path(
        "projects/<id:project_id>/",
        annotate_api.ProjectDetailApi.as_view(),
        name="project-detail",
    ),
    path(
        "projects/<id:project_id>/prompts/",
        annotate_api.PromptListApi.as_view(),
        name="prompt-list",
    ),
    path(
        "projects/<id:project_id>/prompts/upload/",
        annotate_api.PromptUploadApi.as_view(),
        name="prompt-upload",
    ),
    path(
        "projects/<id:project_id>/comparisons/",
        annotate_api.ComparisonListApi.as_view(),
        name="comparison-list",
    ),
    path(
        "projects/<id:project_id>/comparisons/<id:comparison_id>/",
        annotate_api.ComparisonDetailApi.as_view(),
        name="comparison-detail",
    ),
    path(
        "projects/<id:project_id>/demonstrations/",
        annotate_api.DemonstrationListApi.as_view(),
        name="demonstration-list",
    ),
    path(
        "projects/<id:project_id>/demonstrations/<id:demonstration_id>/review/",
        annotate_api.DemonstrationReviewApi.as_view(),
        name="demonstration-review",
    ),
    path(
        "projects/<id:project_id>/my-history/",
        annotate_api.MyHistoryApi.as_view(),
        name="my-history",
    ),
    path("projects/<id:project_id>/members/", annotate_api.MemberListApi.as_view(), name="members"),
    path("projects/<id:project_id>/rounds/", training_api.RoundListApi.as_view(), name="rounds"),
    path(
        "projects/<id:project_id>/rounds/<id:number>/close/",
        training_api.RoundCloseApi.as_view(),
        name="round-close",
    ),
    path(
        "projects/<id:project_id>/comparisons/next/",
        annotate_api.NextPairApi.as_view(),
        name="comparison-next",
    ),
    path(
        "projects/<id:project_id>/judgments/",
        annotate_api.JudgmentListApi.as_view(),
        name="judgment-list",
    ),
    path(
        "assignments/<id:assignment_id>/submit/",
        annotate_api.SubmitJudgmentApi.as_view(),
        name="assignment-submit",
    ),
    path(
        "assignments/<id:assignment_id>/skip/",
        annotate_api.SkipPairApi.as_view(),
        name="assignment-skip",
    ),
    path(
        "assignments/<id:assignment_id>/release/",
        annotate_api.ReleasePairApi.as_view(),
        name="assignment-release",
    ),
    path(
        "projects/<id:project_id>/statistics/",
        annotate_api.StatisticsApi.as_view(),
        name="project-statistics",
    ),
    path(
        "projects/<id:project_id>/annotators/<id:user_id>/pause/",
        annotate_api.AnnotatorPauseApi.as_view(),
        name="annotator-pause",
    ),
    *data_patterns,
    path("projects/<id:project_id>/runs/", training_api.TrainingRunListApi.as_view()),
    path("runs/<id:run_id>/", training_api.TrainingRunDetailApi.as_view()),
    path("runs/<id:run_id>/metrics/", training_api.TrainingRunMetricsApi.as_view()),
    path("runs/<id:run_id>/cancel/", training_api.TrainingRunCancelApi.as_view()),
    path("runs/<id:run_id>/retry/", training_api.TrainingRunRetryApi.as_view()),
    path("projects/<id:project_id>/versions/", training_api.ModelVersionListApi.as_view()),
    path(
        "projects/<id:project_id>/training-settings/",
        training_api.TrainingSettingsApi.as_view(),
        name="training-settings",
    ),
    path(
        "projects/<id:project_id>/ai-judges/",
        training_api.AiJudgeListApi.as_view(),
        name="ai-judges",
    ),
    path(
        "projects/<id:project_id>/ai-judges/<id:judge_id>/run/",
        training_api.AiJudgeRunApi.as_view(),
        name="ai-judge-run",
    ),
    path("versions/<id:version_id>/promote/", training_api.ModelVersionPromoteApi.as_view()),
    path("web/", include(web_urls.api_patterns)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("healthz", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    *web_urls.page_patterns,
]

handler404 = "config.errors.not_found"
