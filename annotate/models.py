"""Feedback collection: projects, prompts, responses, rounds, comparisons, assignments, judgments.

Invariants that matter for data quality are database constraints, not only Python checks, so a
bug in one code path or a second writer cannot break them (one judgment per annotator and
comparison, never more judgments than a comparison requires, exactly one open round, ...).
Writes go through `services.py`; these classes hold no business logic.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class TrainingAlgorithm(models.TextChoices):
    DPO = "dpo", "DPO (direct from human pairs)"
    PPO = "ppo", "PPO (against the reward model)"
    RLOO = "rloo", "RLOO (against the reward model)"
    KTO = "kto", "KTO (from answers rated one by one)"


class RatingScale(models.TextChoices):
    THUMBS = "thumbs", "Thumbs up or down"
    LIKERT_7 = "likert7", "A score from 1 (bad) to 7 (excellent)"


def default_generation_settings() -> dict:
    return {"max_new_tokens": 128, "temperature": 0.8, "top_p": 0.95, "samples_per_prompt": 2}


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    guidelines = models.TextField(blank=True, help_text="Shown to annotators; Markdown.")
    base_model = models.CharField(
        max_length=500,
        default="smollm2-135m-instruct",
        help_text="A packaged model name, a local folder, or a hub id.",
    )
    reward_backbone = models.CharField(max_length=500, default="smollm2-135m-instruct")
    generation_settings = models.JSONField(default=default_generation_settings)
    required_annotations = models.PositiveSmallIntegerField(
        default=1, help_text="Judgments needed before a pair is complete (overlap)."
    )
    gold_rate = models.FloatField(default=0.0, help_text="Share of served pairs that are gold.")
    round_quota = models.PositiveIntegerField(
        default=64, help_text="Complete comparisons after which a round closes by itself."
    )
    max_prompt_chars = models.PositiveIntegerField(default=8_000)
    demonstration_share = models.FloatField(
        default=0.0,
        help_text="Share of a round's prompts (not held out) whose item asks for a written "
        "answer instead of a choice between two.",
    )
    rating_share = models.FloatField(
        default=0.0,
        help_text="Share of a round's prompts (not held out) whose item asks for a rating of "
        "each answer on its own instead of a choice between them.",
    )
    rating_scale = models.CharField(
        max_length=8, choices=RatingScale.choices, default=RatingScale.THUMBS
    )
    ranking_share = models.FloatField(
        default=0.0,
        help_text="Share of a round's prompts (not held out) whose item asks for a ranking of "
        "the prompt's `ranking_size` newest answers instead of a choice between two.",
    )
    ranking_size = models.PositiveSmallIntegerField(
        default=4, help_text="How many answers a ranking item shows (3 to 6)."
    )
    review_demonstrations = models.BooleanField(
        default=False,
        help_text="A written answer trains only once a second annotator accepts it.",
    )
    min_view_ms = models.PositiveIntegerField(
        default=800,
        help_text="A judging key acts on a pair only once it has been on screen this long "
        "(from when it was painted); 0 lets keys act at once.",
    )
    training_algorithm = models.CharField(
        max_length=8, choices=TrainingAlgorithm.choices, default=TrainingAlgorithm.DPO
    )
    training_settings = models.JSONField(default=dict, blank=True)
    # Gates a candidate policy must pass before it may serve.
    gate_min_win_rate = models.FloatField(default=0.5)
    gate_max_kl = models.FloatField(default=10.0)
    gate_min_heldout_accuracy = models.FloatField(default=0.5)
    auto_promote = models.BooleanField(default=False)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(required_annotations__gte=1), name="project_required_annotations_min_1"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="project_gold_rate_0_1"
            ),
            models.CheckConstraint(
                condition=Q(demonstration_share__gte=0) & Q(demonstration_share__lte=1),
                name="project_demonstration_share_0_1",
            ),
            models.CheckConstraint(
                condition=Q(rating_share__gte=0)
                & Q(ranking_share__gte=0)
                & Q(demonstration_share__lte=1 - F("rating_share") - F("ranking_share")),
                name="project_feedback_shares_sum_to_at_most_1",
            ),
            models.CheckConstraint(
                condition=Q(ranking_size__gte=3) & Q(ranking_size__lte=6),
                name="project_ranking_size_3_to_6",
            ),
            models.CheckConstraint(
                condition=Q(gate_min_win_rate__gte=0) & Q(gate_min_win_rate__lte=1),
                name="project_gate_win_rate_0_1",
            ),
            models.CheckConstraint(
                condition=Q(gate_min_heldout_accuracy__gte=0) & Q(gate_min_heldout_accuracy__lte=1),
                name="project_gate_accuracy_0_1",
            ),
            models.CheckConstraint(condition=Q(gate_max_kl__gte=0), name="project_gate_kl_min_0"),
            models.CheckConstraint(
                condition=Q(training_algorithm__in=TrainingAlgorithm.values),
                name="project_training_algorithm_valid",
            ),
            models.CheckConstraint(
                condition=Q(max_prompt_chars__gte=1), name="project_max_prompt_chars_min_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MemberRole(models.TextChoices):
    ANNOTATOR = "annotator", "Annotator"
    CLIENT = "client", "API client"


class Membership(models.Model):
    """A user's access to a project. Staff users see every project without one."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.ANNOTATOR)
    paused = models.BooleanField(default=False, help_text="A paused annotator is served no pairs.")
    shares_served_traffic = models.BooleanField(
        default=False,
        help_text="This member's requests to the policy server may be kept as prompts (and "
        "answer pairs) for the next round, where the project keeps served traffic.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.CheckConstraint(
                condition=Q(role__in=MemberRole.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Prompt(models.Model):
    """What the policy answers: plain text, or a chat transcript ending with a user turn."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=200, null=True, blank=True)
    text = models.TextField(blank=True)
    messages = models.JSONField(
        null=True, blank=True, help_text='Chat turns: [{"role": "user", "content": "..."}, ...]'
    )
    source = models.CharField(max_length=100, default="api")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # Idempotent intake: a program may send the same batch twice.
            models.UniqueConstraint(
                fields=["project", "external_id"],
                condition=Q(external_id__isnull=False),
                name="prompt_unique_external_id",
            ),
            # Exactly one of text and messages carries the prompt.
            models.CheckConstraint(
                condition=(Q(messages__isnull=True) & ~Q(text=""))
                | (Q(messages__isnull=False) & Q(text="")),
                name="prompt_text_xor_messages",
            ),
        ]

    def __str__(self) -> str:
        return f"Prompt {self.pk} ({self.external_id or 'no external id'})"


class RoundStatus(models.TextChoices):
    OPEN = "open", "Collecting judgments"
    CLOSED = "closed", "Closed, training queued"
    TRAINED = "trained", "Trained"


class Round(models.Model):
    """Collects comparisons of one policy version's answers; closing it queues training."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    policy = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="rounds"
    )
    status = models.CharField(max_length=8, choices=RoundStatus.choices, default=RoundStatus.OPEN)
    quota = models.PositiveIntegerField(default=64)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["project", "number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="round_unique_number"),
            models.UniqueConstraint(
                fields=["project"], condition=Q(status="open"), name="round_one_open_per_project"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RoundStatus.values), name="round_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True) | ~Q(status="open"),
                name="round_open_has_no_closed_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} round {self.number}"


class ResponseSource(models.TextChoices):
    POLICY = "policy", "Written by a Tandem policy version"
    EXTERNAL = "external", "Imported from outside"


class Response(models.Model):
    """One answer to a prompt. Model outputs are untrusted text: always render them escaped."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="responses"
    )
    model_version = models.ForeignKey(
        "registry.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="responses",
    )
    source = models.CharField(
        max_length=8, choices=ResponseSource.choices, default=ResponseSource.POLICY
    )
    external_model = models.CharField(max_length=200, blank=True)
    text = models.TextField()
    generation_settings = models.JSONField(default=dict, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finished = models.BooleanField(default=True, help_text="False if cut at the token limit.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # A policy answer always records which version wrote it.
            models.CheckConstraint(
                condition=~Q(source="policy") | Q(model_version__isnull=False),
                name="response_policy_has_version",
            ),
            models.CheckConstraint(
                condition=Q(source__in=ResponseSource.values), name="response_source_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Response {self.pk} to prompt {self.prompt_id}"


class ComparisonStatus(models.TextChoices):
    OPEN = "open", "Open"
    COMPLETE = "complete", "Complete"
    CANCELLED = "cancelled", "Cancelled"


class Outcome(models.TextChoices):
    """A judgment's answer in terms of the comparison's own response_a / response_b."""

    A = "a", "A better"
    B = "b", "B better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class FeedbackKind(models.TextChoices):
    """What an annotator gives on a queued item; each kind's rules live in annotate/feedback/."""

    PAIRWISE = "pairwise", "Which of two answers is better"
    DEMONSTRATION = "demonstration", "Write the answer, or rewrite one of the two shown"
    RATING = "rating", "Rate each of the two answers on its own"
    RANKING = "ranking", "Rank several answers from best to worst"


class Comparison(models.Model):
    """One item of the judging queue: leased, judged to its overlap, resolved, exported.

    `kind` says which feedback type it collects (annotate.feedback); the queue itself treats
    every kind alike.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="comparisons")
    kind = models.CharField(
        max_length=16, choices=FeedbackKind.choices, default=FeedbackKind.PAIRWISE
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    round = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="comparisons"
    )
    response_a = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    response_b = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    required_annotations = models.PositiveSmallIntegerField(default=1)
    # Kept in step with the judgments inside the submit transaction; the check constraint below
    # makes the database itself refuse a judgment beyond the quota.
    judgment_count = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=ComparisonStatus.choices, default=ComparisonStatus.OPEN
    )
    priority = models.FloatField(default=0.0, help_text="Higher is served first.")
    gold_outcome = models.CharField(max_length=8, choices=Outcome.choices, null=True, blank=True)
    # How the pair was chosen among the prompt's answers (strategy, why, every answer's reward
    # score and the reward model that gave them), so an analysis can tell the choices apart.
    selection = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "id"]
        indexes = [
            models.Index(fields=["project", "status", "-priority", "id"]),
            # The quota check after each completed pair counts a round's pairs by status.
            models.Index(fields=["round", "status"], name="comparison_round_status"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(response_a=F("response_b")), name="comparison_distinct_responses"
            ),
            models.UniqueConstraint(
                fields=["prompt", "response_a", "response_b"], name="comparison_unique_pair"
            ),
            models.CheckConstraint(
                condition=Q(required_annotations__gte=1), name="comparison_required_min_1"
            ),
            models.CheckConstraint(
                condition=Q(judgment_count__lte=F("required_annotations")),
                name="comparison_judgments_within_quota",
            ),
            models.CheckConstraint(
                condition=Q(status__in=ComparisonStatus.values), name="comparison_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=FeedbackKind.values), name="comparison_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(gold_outcome__isnull=True) | Q(gold_outcome__in=Outcome.values),
                name="comparison_gold_outcome_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk} on prompt {self.prompt_id}"

    @property
    def is_gold(self) -> bool:
        return self.gold_outcome is not None


class AssignmentStatus(models.TextChoices):
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"
    SKIPPED = "skipped", "Skipped"
    RELEASED = "released", "Released"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """A lease of one comparison to one annotator, with the side each answer is shown on."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="assignments",
        db_index=False,  # assignment_annotator_live leads with the annotator
    )
    status = models.CharField(
        max_length=10, choices=AssignmentStatus.choices, default=AssignmentStatus.LEASED
    )
    # Random per assignment so position bias averages out; recorded to measure left-side bias.
    a_on_left = models.BooleanField()
    leased_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["status", "expires_at"]),
            # `next` looks up the annotator's live lease: without this it read every lease
            # the annotator ever had.
            models.Index(
                fields=["annotator", "status", "expires_at"], name="assignment_annotator_live"
            ),
        ]
        constraints = [
            # An annotator is never served the same comparison twice.
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="assignment_unique_annotator"
            ),
            models.CheckConstraint(
                condition=Q(status__in=AssignmentStatus.values), name="assignment_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=F("leased_at")), name="assignment_expires_after_lease"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.comparison} leased to {self.annotator} ({self.status})"


class Choice(models.TextChoices):
    """What the annotator pressed, in screen terms."""

    LEFT = "left", "Left better"
    RIGHT = "right", "Right better"
    TIE = "tie", "Tie"
    BOTH_BAD = "both_bad", "Both bad"


class Strength(models.TextChoices):
    SLIGHT = "slight", "Slightly better"
    CLEAR = "clear", "Clearly better"
    STRONG = "strong", "Much better"


class JudgmentSource(models.TextChoices):
    HUMAN = "human", "Human annotator"
    SIMULATED = "simulated", "Simulated annotator"
    IMPORTED = "imported", "Imported data"
    AI = "ai", "An AI judge"


class Judgment(models.Model):
    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="judgments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgment"
    )
    choice = models.CharField(max_length=8, choices=Choice.choices)
    strength = models.CharField(max_length=8, choices=Strength.choices, null=True, blank=True)
    rationale = models.TextField(blank=True)
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    # Which answer was on which side when the annotator chose: `choice` is read through these.
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    right_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(
        max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN
    )
    # A client-chosen key: a retried submit carrying the same key returns the stored judgment.
    submission_key = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="judgment_one_per_annotator"
            ),
            models.CheckConstraint(
                condition=~Q(left_response=F("right_response")), name="judgment_distinct_sides"
            ),
            models.CheckConstraint(
                condition=Q(choice__in=Choice.values), name="judgment_choice_valid"
            ),
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(strength__in=Strength.values),
                name="judgment_strength_valid",
            ),
            # A tie or "both bad" has no winner whose margin a strength could describe.
            models.CheckConstraint(
                condition=Q(strength__isnull=True) | Q(choice__in=["left", "right"]),
                name="judgment_strength_only_with_winner",
            ),
        ]

    def __str__(self) -> str:
        return f"Judgment {self.pk} by {self.annotator} on {self.comparison_id}: {self.choice}"

    @property
    def outcome(self) -> str:
        """The choice in the comparison's own terms (a / b / tie / both_bad)."""
        return choice_outcome(
            self.choice,
            self.left_response_id,
            self.right_response_id,
            self.comparison.response_a_id,
        )


# A thumbs rating is stored on the 1-7 scale's ends, so one threshold reads both scales.
THUMBS_DOWN, THUMBS_UP = 1, 7


class Rating(models.Model):
    """An annotator's rating of each of an item's two answers on its own (no comparison
    between them is asked), stored by side as shown, like a pairwise judgment. KTO trains on
    each answer rated: desirable at or above the project's threshold."""

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="ratings")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ratings"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="rating"
    )
    scale = models.CharField(max_length=8, choices=RatingScale.choices)
    left_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    right_response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    left_score = models.PositiveSmallIntegerField()
    right_score = models.PositiveSmallIntegerField()
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(
        max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN
    )
    submission_key = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="rating_one_per_annotator"
            ),
            models.CheckConstraint(
                condition=Q(left_score__gte=1, left_score__lte=7)
                & Q(right_score__gte=1, right_score__lte=7),
                name="rating_scores_1_to_7",
            ),
            models.CheckConstraint(
                condition=Q(scale__in=RatingScale.values), name="rating_scale_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Rating {self.pk} by {self.annotator} on {self.comparison_id}"


class ComparisonAnswer(models.Model):
    """One of the answers a ranking item shows, in the item's fixed order (`position`). The
    item's response_a and response_b are two of them; a lease shuffles the order shown."""

    comparison = models.ForeignKey(
        Comparison, on_delete=models.CASCADE, related_name="listed_answers"
    )
    response = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["comparison", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "position"], name="comparison_answer_unique_position"
            ),
            models.UniqueConstraint(
                fields=["comparison", "response"], name="comparison_answer_unique_response"
            ),
        ]

    def __str__(self) -> str:
        return f"Answer {self.position} of {self.comparison_id}: response {self.response_id}"


class Ranking(models.Model):
    """One annotator's ranking of a ranking item's answers: `ranks` maps each response id (as
    text, JSON's keys) to its rank, 1 the best, equal ranks a tie; `shown` is the order the
    answers were on screen (response ids), to measure position bias."""

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="rankings")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="ranking"
    )
    shown = models.JSONField(help_text="Response ids in the order shown.")
    ranks = models.JSONField(help_text='Response id to rank, 1 = best: {"12": 1, "13": 2}.')
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(
        max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN
    )
    submission_key = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="ranking_one_per_annotator"
            ),
        ]

    def __str__(self) -> str:
        return f"Ranking {self.pk} by {self.annotator} on {self.comparison_id}"


class ReviewStatus(models.TextChoices):
    """A demonstration's review: a second annotator accepts or rejects it where the project
    asks for review; otherwise it is accepted as written."""

    PENDING = "pending", "Waiting for review"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected"


class Demonstration(models.Model):
    """An answer written by a person, for supervised fine-tuning: from scratch, or edited from
    one of the answers the item showed (`edited_from`, whose model_version says which policy
    wrote the original). Imported demonstrations have no comparison or assignment."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    comparison = models.ForeignKey(
        Comparison,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="demonstrations",
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations"
    )
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="demonstration"
    )
    text = models.TextField(blank=True)
    edited_from = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    time_spent_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(
        max_length=10, choices=JudgmentSource.choices, default=JudgmentSource.HUMAN
    )
    review_status = models.CharField(
        max_length=8, choices=ReviewStatus.choices, default=ReviewStatus.ACCEPTED
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="demonstrations_reviewed",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    submission_key = models.UUIDField(default=uuid.uuid4, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "review_status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["comparison", "annotator"],
                condition=Q(comparison__isnull=False),
                name="demonstration_one_per_annotator",
            ),
            models.CheckConstraint(
                condition=Q(review_status__in=ReviewStatus.values),
                name="demonstration_review_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"Demonstration {self.pk} by {self.annotator} on prompt {self.prompt_id}"


def choice_outcome(
    choice: str, left_response_id: int | None, right_response_id: int | None, response_a_id: int
) -> str:
    """A pairwise choice (screen terms) in the comparison's own terms: a / b / tie / both_bad."""
    if choice in (Choice.TIE, Choice.BOTH_BAD):
        return choice
    chosen = left_response_id if choice == Choice.LEFT else right_response_id
    return Outcome.A if chosen == response_a_id else Outcome.B
