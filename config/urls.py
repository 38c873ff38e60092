from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotate import api as annotate_api
from config.health import health

api_patterns = [
    path("projects/", annotate_api.ProjectListApi.as_view(), name="project-list"),
    path(
        "projects/<int:project_id>/",
        annotate_api.ProjectDetailApi.as_view(),
        name="project-detail",
    ),
    path(
        "projects/<int:project_id>/prompts/",
        annotate_api.PromptListApi.as_view(),
        name="prompt-list",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("healthz", health, name="health"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
]
