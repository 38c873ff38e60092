"""The web UI's JSON endpoints (under /api/web/) and the pages that load the single-page app."""

from django.urls import path, re_path

from web import api, views

api_patterns = [
    path("login/", api.LoginApi.as_view(), name="web-login"),
    path("logout/", api.LogoutApi.as_view(), name="web-logout"),
    path("me/", api.MeApi.as_view(), name="web-me"),
    path("projects/<id:project_id>/progress/", api.ProgressApi.as_view(), name="web-progress"),
    path(
        "projects/<id:project_id>/lease-ahead/",
        api.LeaseAheadApi.as_view(),
        name="web-lease-ahead",
    ),
    path("projects/<id:project_id>/rounds/", api.RoundSummaryApi.as_view(), name="web-rounds"),
    path(
        "projects/<id:project_id>/members/<id:user_id>/",
        api.MembershipDeleteApi.as_view(),
        name="web-membership",
    ),
    path("users/", api.UserListApi.as_view(), name="web-users"),
    path("users/<id:user_id>/", api.UserDetailApi.as_view(), name="web-user"),
    path("users/<id:user_id>/token/", api.TokenApi.as_view(), name="web-token"),
]

page_patterns = [
    path("", views.spa, name="web-home"),
    re_path(r"^app(?:/.*)?$", views.spa, name="web-app"),
]
