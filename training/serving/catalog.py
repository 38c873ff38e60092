"""What the policy server may serve to whom: API tokens, model names and the registry's versions.

Synchronous Django reads; the ASGI app calls them through `sync_to_async`. Names:

  <slug>              the project's active policy (what the loop promoted last)
  <slug>@v<N>         version N of the project's policy (v0 is the base model)
  <slug>@candidate    the newest candidate, so an app can try it before promotion

A token sees the projects its user sees (staff: all; others: their memberships). Each request
resolves its name again, so a promotion or rollback is what the next request gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import close_old_connections
from rest_framework.authtoken.models import Token

from annotate.models import Project
from annotate.selectors import projects_visible_to
from registry.models import ModelKind, ModelVersion, VersionStatus
from registry.selectors import reward_model_for
from training.project_settings import served_traffic_of

NAME = re.compile(r"^(?P<slug>[-a-zA-Z0-9_]+)(?:@(?P<selector>candidate|v(?P<number>\d{1,9})))?$")


class CatalogError(Exception):
    """A name the caller cannot use; `status` and `code` say why, as the API answers."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class Caller:
    token_key: str
    user_id: int
    username: str
    is_staff: bool
    project_ids: frozenset[int]


@dataclass(frozen=True)
class ServedVersion:
    """One registry version, as the server loads and names it."""

    requested: str  # the name the request used
    project_id: int
    project_slug: str
    version_id: int
    number: int
    kind: str
    base_model: str
    artifact_path: str  # empty for v0, the base model itself
    runtime_name: str | None = None  # loaded through /v1/load_lora_adapter, not the registry
    served_traffic: str = "off"  # the project's choice of what to keep (opted-in members only)

    @property
    def name(self) -> str:
        """The version's own name: what a response says answered."""
        return self.runtime_name or f"{self.project_slug}@v{self.number}"

    @property
    def adapter_key(self) -> str:
        """The batcher's name for its adapter: per registry row, or per runtime name."""
        return f"rt-{self.runtime_name}" if self.runtime_name else f"v{self.version_id}"


def caller_for_token(key: str) -> Caller | None:
    close_old_connections()  # a long-lived thread: drop a connection the database closed
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    user = token.user
    return Caller(
        token_key=key,
        user_id=user.pk,
        username=user.get_username(),
        is_staff=user.is_staff,
        project_ids=frozenset(projects_visible_to(user).values_list("pk", flat=True)),
    )


def _project_for(name: str, caller: Caller) -> tuple[Project, re.Match[str]]:
    match = NAME.match(name)
    if match is None:
        raise CatalogError(
            f"The model {name!r} does not exist: use <project-slug>, <project-slug>@v<N> "
            "or <project-slug>@candidate (GET /v1/models lists yours).",
            status=404, code="model_not_found",
        )  # fmt: skip
    project = Project.objects.filter(slug=match["slug"]).first()
    if project is None:
        raise CatalogError(
            f"The model {name!r} does not exist.", status=404, code="model_not_found"
        )
    if project.pk not in caller.project_ids:
        raise CatalogError(
            f"This API token has no access to project {project.slug!r}.",
            status=403, code="permission_denied",
        )  # fmt: skip
    return project, match


def _served(version: ModelVersion, requested: str, project: Project) -> ServedVersion:
    return ServedVersion(
        served_traffic=served_traffic_of(project),
        requested=requested,
        project_id=project.pk,
        project_slug=project.slug,
        version_id=version.pk,
        number=version.number,
        kind=version.kind,
        base_model=version.base_model,
        artifact_path=version.artifact_path,
    )


def resolve_policy(name: str, caller: Caller) -> ServedVersion:
    close_old_connections()
    project, match = _project_for(name, caller)
    versions = ModelVersion.objects.filter(project=project, kind=ModelKind.POLICY)
    selector = match["selector"]
    if selector is None:
        version = versions.filter(status=VersionStatus.ACTIVE).first()
        missing = f"Project {project.slug!r} has no active policy."
    elif selector == "candidate":
        version = versions.filter(status=VersionStatus.CANDIDATE).order_by("-number").first()
        missing = f"Project {project.slug!r} has no candidate policy."
    else:
        version = versions.filter(number=int(match["number"])).first()
        missing = f"Project {project.slug!r} has no policy version {match['number']}."
    if version is None:
        raise CatalogError(missing, status=404, code="model_not_found")
    return _served(version, name, project)


def resolve_reward(name: str, caller: Caller) -> ServedVersion:
    """<slug>: the reward model that judges the project's candidates; <slug>@v<N>: one."""
    close_old_connections()
    project, match = _project_for(name, caller)
    if match["selector"] == "candidate":
        raise CatalogError(
            "Reward models have no candidate: use <slug> or <slug>@v<N>.",
            status=404, code="model_not_found",
        )  # fmt: skip
    if match["number"] is not None:
        version = ModelVersion.objects.filter(
            project=project, kind=ModelKind.REWARD, number=int(match["number"])
        ).first()
    else:
        version = reward_model_for(project_id=project.pk)
    if version is None or not version.artifact_path:
        raise CatalogError(
            f"Project {project.slug!r} has no such reward model yet.",
            status=404, code="model_not_found",
        )  # fmt: skip
    return _served(version, name, project)


@dataclass(frozen=True)
class ListedModel:
    id: str
    created: int
    owned_by: str
    version: int
    status: str


def models_visible(caller: Caller) -> list[ListedModel]:
    """Every policy name the caller may ask for, the moving names first per project."""
    close_old_connections()
    listed: list[ListedModel] = []
    versions = (
        ModelVersion.objects.filter(project_id__in=caller.project_ids, kind=ModelKind.POLICY)
        .select_related("project")
        .order_by("project__slug", "number")
    )
    by_project: dict[str, list[ModelVersion]] = {}
    for version in versions:
        by_project.setdefault(version.project.slug, []).append(version)
    for slug, rows in by_project.items():
        active = next((v for v in rows if v.status == VersionStatus.ACTIVE), None)
        candidates = [v for v in rows if v.status == VersionStatus.CANDIDATE]
        if active is not None:
            listed.append(_listed(slug, active))
        if candidates:
            listed.append(_listed(f"{slug}@candidate", candidates[-1]))
        listed.extend(_listed(f"{slug}@v{v.number}", v) for v in rows)
    return listed


def _listed(name: str, version: ModelVersion) -> ListedModel:
    return ListedModel(
        id=name,
        created=int(version.created_at.timestamp()),
        owned_by=version.project.slug,
        version=version.number,
        status=version.status,
    )


def base_models_in_use() -> list[str]:
    """Bases of the active policies, most used first: what the server loads at start."""
    close_old_connections()
    counts: dict[str, int] = {}
    for base in ModelVersion.objects.filter(
        kind=ModelKind.POLICY, status=VersionStatus.ACTIVE
    ).values_list("base_model", flat=True):
        counts[base] = counts.get(base, 0) + 1
    return sorted(counts, key=lambda b: -counts[b])
