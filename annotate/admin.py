"""Django admin for feedback data. Model outputs are untrusted: shown only through format_html,
which escapes them, and never marked safe."""

from django.contrib import admin
from django.utils.html import format_html

from annotate.models import (
    Assignment,
    Comparison,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
    Round,
)

PREVIEW_CHARS = 120


def escaped_preview(text: str) -> str:
    clipped = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
    return format_html('<span class="tandem-untrusted">{}</span>', clipped)


def escaped_block(text: str) -> str:
    return format_html('<pre class="tandem-untrusted" style="white-space:pre-wrap">{}</pre>', text)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "base_model", "required_annotations", "training_algorithm"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "paused"]
    list_filter = ["role", "paused", "project"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "external_id", "preview", "source", "created_at"]
    list_filter = ["project", "source"]
    search_fields = ["external_id", "text"]

    @admin.display(description="Prompt")
    def preview(self, prompt: Prompt) -> str:
        if prompt.messages:
            return escaped_preview(prompt.messages[-1]["content"])
        return escaped_preview(prompt.text)


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "policy", "status", "quota", "opened_at", "closed_at"]
    list_filter = ["project", "status"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt_id", "model_version", "source", "preview", "token_count"]
    list_filter = ["source", "prompt__project"]
    # The raw text is never put in an editable widget's HTML unescaped; the read-only block
    # shows it escaped, and editing a model's output is not something an admin should do.
    readonly_fields = ["text_escaped"]
    exclude = ["text"]
    raw_id_fields = ["prompt", "round", "model_version"]

    @admin.display(description="Response")
    def preview(self, response: Response) -> str:
        return escaped_preview(response.text)

    @admin.display(description="Text")
    def text_escaped(self, response: Response) -> str:
        return escaped_block(response.text)


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "status", "judgment_count", "priority", "is_gold"]
    list_filter = ["project", "status"]
    readonly_fields = ["answer_a", "answer_b"]
    raw_id_fields = ["prompt", "round", "response_a", "response_b"]

    @admin.display(boolean=True, description="Gold")
    def is_gold(self, comparison: Comparison) -> bool:
        return comparison.is_gold

    @admin.display(description="Answer A")
    def answer_a(self, comparison: Comparison) -> str:
        return escaped_block(comparison.response_a.text)

    @admin.display(description="Answer B")
    def answer_b(self, comparison: Comparison) -> str:
        return escaped_block(comparison.response_b.text)


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison_id", "annotator", "status", "a_on_left", "expires_at"]
    list_filter = ["status"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison_id", "annotator", "choice", "strength", "source"]
    list_filter = ["choice", "source", "comparison__project"]
    raw_id_fields = ["comparison", "annotator", "assignment", "left_response", "right_response"]
    readonly_fields = ["rationale_escaped"]

    @admin.display(description="Rationale (as shown)")
    def rationale_escaped(self, judgment: Judgment) -> str:
        return escaped_block(judgment.rationale)
