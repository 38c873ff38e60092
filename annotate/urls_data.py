"""API routes for bulk data: import and export (included under /api/ by config/urls.py)."""

from django.urls import path

from annotate import api_data

data_patterns: list = [
    path(
        "projects/<id:project_id>/import/",
        api_data.ProjectImportApi.as_view(),
        name="data-import",
    ),
    path(
        "projects/<id:project_id>/export/trl/",
        api_data.ExportTrlApi.as_view(),
        name="export-trl",
    ),
    path(
        "projects/<id:project_id>/export/judgments.jsonl",
        api_data.ExportJudgmentsJsonlApi.as_view(),
        name="export-judgments-jsonl",
    ),
    path(
        "projects/<id:project_id>/export/judgments.csv",
        api_data.ExportJudgmentsCsvApi.as_view(),
        name="export-judgments-csv",
    ),
    path(
        "projects/<id:project_id>/export/sft/",
        api_data.ExportSftApi.as_view(),
        name="export-sft",
    ),
    path(
        "projects/<id:project_id>/export/kto/",
        api_data.ExportKtoApi.as_view(),
        name="export-kto",
    ),
]
