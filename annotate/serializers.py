"""Input and output shapes of the feedback API. No business logic: services decide."""

from rest_framework import serializers

from annotate.feedback.demonstration import DemonstrationSubmitInput
from annotate.feedback.pairwise import JUDGMENT_FIELDS, PairwiseSubmitInput
from annotate.feedback.ranking import RankingSubmitInput
from annotate.feedback.rating import RatingSubmitInput
from annotate.models import (
    Comparison,
    ComparisonStatus,
    Demonstration,
    FeedbackKind,
    Judgment,
    MemberRole,
    Outcome,
    Project,
    Prompt,
    RatingScale,
    ReviewStatus,
    Round,
    TrainingAlgorithm,
)
from config.validation import MAX_POSITIVE_INTEGER, BoundedIntegerField


class ProjectOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "guidelines",
            "base_model",
            "generation_settings",
            "required_annotations",
            "gold_rate",
            "round_quota",
            "max_prompt_chars",
            "min_view_ms",
            "training_algorithm",
            "gate_min_win_rate",
            "gate_max_kl",
            "gate_min_heldout_accuracy",
            "auto_promote",
            "demonstration_share",
            "rating_share",
            "rating_scale",
            "ranking_share",
            "ranking_size",
            "review_demonstrations",
            "created_at",
        ]


class ProjectCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    guidelines = serializers.CharField(required=False, allow_blank=True, default="")
    base_model = serializers.CharField(max_length=500, default="smollm2-135m-instruct")
    required_annotations = BoundedIntegerField(min_value=1, max_value=50, default=1)
    gold_rate = serializers.FloatField(min_value=0, max_value=1, default=0.0)
    round_quota = BoundedIntegerField(min_value=1, max_value=MAX_POSITIVE_INTEGER, default=64)
    max_prompt_chars = BoundedIntegerField(min_value=1, max_value=1_000_000, default=8_000)
    min_view_ms = BoundedIntegerField(min_value=0, max_value=60_000, default=800)
    training_algorithm = serializers.ChoiceField(
        choices=TrainingAlgorithm.choices, default=TrainingAlgorithm.DPO
    )
    auto_promote = serializers.BooleanField(default=False)


class ProjectUpdateInputSerializer(serializers.Serializer):
    """What an admin may change on a live project; every field optional (PATCH)."""

    description = serializers.CharField(required=False, allow_blank=True)
    guidelines = serializers.CharField(required=False, allow_blank=True)
    required_annotations = BoundedIntegerField(required=False, min_value=1, max_value=50)
    gold_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    round_quota = BoundedIntegerField(required=False, min_value=1, max_value=MAX_POSITIVE_INTEGER)
    min_view_ms = BoundedIntegerField(required=False, min_value=0, max_value=60_000)
    training_algorithm = serializers.ChoiceField(choices=TrainingAlgorithm.choices, required=False)
    gate_min_win_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    gate_max_kl = serializers.FloatField(required=False, min_value=0, max_value=1e9)
    gate_min_heldout_accuracy = serializers.FloatField(required=False, min_value=0, max_value=1)
    auto_promote = serializers.BooleanField(required=False)
    demonstration_share = serializers.FloatField(required=False, min_value=0, max_value=1)
    rating_share = serializers.FloatField(required=False, min_value=0, max_value=1)
    rating_scale = serializers.ChoiceField(choices=RatingScale.choices, required=False)
    ranking_share = serializers.FloatField(required=False, min_value=0, max_value=1)
    ranking_size = BoundedIntegerField(required=False, min_value=3, max_value=6)
    review_demonstrations = serializers.BooleanField(required=False)


class PromptOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "external_id", "text", "messages", "source", "metadata", "created_at"]


class PromptBatchInputSerializer(serializers.Serializer):
    # Rows are checked one by one by the service so each bad row gets its own message.
    prompts = serializers.ListField(child=serializers.JSONField(), allow_empty=False)
    # Named as the API names it, though DRF's Field has a `source` attribute of its own.
    source = serializers.CharField(max_length=100, default="api")  # type: ignore[assignment]
    all_or_nothing = serializers.BooleanField(default=True)


class PromptUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL (one prompt object a line) or CSV with 'text'")
    source = serializers.CharField(max_length=100, default="upload")  # type: ignore[assignment]
    all_or_nothing = serializers.BooleanField(default=True)


class RowErrorSerializer(serializers.Serializer):
    index = BoundedIntegerField()
    error = serializers.CharField()


class PromptBatchOutputSerializer(serializers.Serializer):
    created = BoundedIntegerField()
    unchanged = BoundedIntegerField()
    prompt_ids = serializers.ListField(child=BoundedIntegerField())
    # The API's name for the rows left out; it shadows Serializer.errors on this output-only class.
    errors = RowErrorSerializer(many=True)  # type: ignore[assignment]


class TextSerializer(serializers.Serializer):
    text = serializers.CharField()


class PromptViewSerializer(serializers.Serializer):
    text = serializers.CharField(allow_null=True)
    messages = serializers.JSONField(allow_null=True)


class LeasedPairSerializer(serializers.Serializer):
    """A leased pair as the annotator sees it; no model identity, no gold flag."""

    assignment_id = BoundedIntegerField()
    project_id = BoundedIntegerField()
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    prompt = PromptViewSerializer()
    left = TextSerializer()
    right = TextSerializer()
    rating_scale = serializers.ChoiceField(
        choices=RatingScale.choices, required=False, help_text="Rating items only."
    )
    answers = TextSerializer(
        many=True,
        required=False,
        help_text="Ranking items only: every answer, in the order shown (ranks follow it).",
    )
    leased_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class SubmitEnvelopeSerializer(serializers.Serializer):
    """The fields every submit carries, whatever its feedback type."""

    kind = serializers.ChoiceField(
        choices=FeedbackKind.choices,
        required=False,
        help_text="The item's feedback type, as `next` showed it (default: pairwise).",
    )
    submission_key = serializers.UUIDField(required=False)
    lease_next = serializers.BooleanField(
        required=False,  # no default, so generated clients may leave it out
        help_text="Also lease the next pair and return it as `next`: one round trip per pair.",
    )


class JudgmentSubmitInputSerializer(PairwiseSubmitInput, SubmitEnvelopeSerializer):
    """A pairwise submit: a choice (and strength, rationale, time) and the generic fields."""


class RatingSubmitInputSerializer(RatingSubmitInput, SubmitEnvelopeSerializer):
    """A rating submit (kind "rating"): a score for each answer by the side it was shown on."""


class RankingSubmitInputSerializer(RankingSubmitInput, SubmitEnvelopeSerializer):
    """A ranking submit (kind "ranking"): one rank per answer in the order shown."""


class DemonstrationSubmitInputSerializer(DemonstrationSubmitInput, SubmitEnvelopeSerializer):
    """A demonstration submit (kind "demonstration"): the written text, the side it was edited
    from if any, and the generic fields."""


class JudgmentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Judgment
        fields = list(JUDGMENT_FIELDS)


class NextErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()


class JudgmentSubmittedSerializer(JudgmentOutputSerializer):
    """A submit's answer: the stored judgment, and the next pair when lease_next was asked."""

    next = LeasedPairSerializer(
        required=False, allow_null=True, help_text="Only with lease_next; null when none is left."
    )
    next_error = NextErrorSerializer(
        required=False, help_text="Why no next pair was leased (the judgment is stored)."
    )

    class Meta(JudgmentOutputSerializer.Meta):
        fields = [*JudgmentOutputSerializer.Meta.fields, "next", "next_error"]


class RatingSubmittedSerializer(serializers.Serializer):
    """A rating submit's answer, and the next item when lease_next was asked."""

    id = BoundedIntegerField()
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    comparison = BoundedIntegerField()
    annotator = BoundedIntegerField()
    scale = serializers.ChoiceField(choices=RatingScale.choices)
    left_response = BoundedIntegerField()
    right_response = BoundedIntegerField()
    left_score = BoundedIntegerField()
    right_score = BoundedIntegerField()
    time_spent_ms = BoundedIntegerField(allow_null=True)
    source = serializers.CharField()  # type: ignore[assignment]
    submission_key = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    next = LeasedPairSerializer(required=False, allow_null=True)
    next_error = NextErrorSerializer(required=False)


class RankingSubmittedSerializer(serializers.Serializer):
    """A ranking submit's answer, and the next item when lease_next was asked."""

    id = BoundedIntegerField()
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    comparison = BoundedIntegerField()
    annotator = BoundedIntegerField()
    ranks = serializers.ListField(
        child=BoundedIntegerField(), help_text="The ranks given, in the order shown."
    )
    time_spent_ms = BoundedIntegerField(allow_null=True)
    source = serializers.CharField()  # type: ignore[assignment]
    submission_key = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    next = LeasedPairSerializer(required=False, allow_null=True)
    next_error = NextErrorSerializer(required=False)


class DemonstrationSubmittedSerializer(serializers.Serializer):
    """A demonstration submit's answer, and the next item when lease_next was asked."""

    id = BoundedIntegerField()
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    comparison = BoundedIntegerField()
    annotator = BoundedIntegerField()
    text = serializers.CharField(allow_blank=True)
    edited_from = BoundedIntegerField(allow_null=True, help_text="The response it was edited from.")
    review_status = serializers.ChoiceField(choices=ReviewStatus.choices)
    time_spent_ms = BoundedIntegerField(allow_null=True)
    source = serializers.CharField()  # type: ignore[assignment]
    submission_key = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    next = LeasedPairSerializer(required=False, allow_null=True)
    next_error = NextErrorSerializer(required=False)


class AnnotatorStatsSerializer(serializers.Serializer):
    annotator_id = BoundedIntegerField()
    username = serializers.CharField()
    judgments = BoundedIntegerField()
    gold_judged = BoundedIntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    agreement_with_others = serializers.FloatField(allow_null=True)
    left_bias = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)
    paused = serializers.BooleanField()
    reliability = serializers.FloatField(
        allow_null=True,
        help_text="Crowd model (two-way Dawid-Skene over every decided vote of the project, "
        "anchored by gold): the chance this annotator's vote names the better side.",
    )
    decided_votes = BoundedIntegerField(help_text="Left/right votes the reliability rests on.")
    flagged = serializers.BooleanField(
        help_text="Reliability below 0.4 on at least 10 decided votes: far below chance."
    )


class FeedbackStatisticsSerializer(serializers.Serializer):
    rankings = BoundedIntegerField()
    demonstrations = BoundedIntegerField()
    demonstrations_by_review = serializers.DictField(child=BoundedIntegerField())
    demonstrations_rewritten = BoundedIntegerField(
        help_text="Written from one of the answers shown rather than anew."
    )
    answers_rated = BoundedIntegerField()
    mean_rating = serializers.FloatField(allow_null=True, help_text="On the 1-7 scale.")
    rated_good_share = serializers.FloatField(
        allow_null=True, help_text="Share of rated answers at 4 or above (thumbs up)."
    )


class ProjectStatisticsSerializer(serializers.Serializer):
    round = BoundedIntegerField(allow_null=True)
    judgments = BoundedIntegerField()
    comparisons_judged = BoundedIntegerField()
    percent_agreement = serializers.FloatField(allow_null=True)
    krippendorff_alpha = serializers.FloatField(allow_null=True)
    resolutions = serializers.DictField(child=BoundedIntegerField())
    annotators = AnnotatorStatsSerializer(many=True)
    feedback = FeedbackStatisticsSerializer()


class HistoryRoundSerializer(serializers.Serializer):
    round = BoundedIntegerField(allow_null=True)
    judgments = BoundedIntegerField()


class HistoryJudgmentSerializer(serializers.Serializer):
    id = BoundedIntegerField()
    created_at = serializers.DateTimeField()
    round = BoundedIntegerField(allow_null=True)
    prompt = serializers.CharField(help_text="The prompt's text, cut short for a list.")
    choice = serializers.CharField()
    strength = serializers.CharField(allow_null=True)
    rationale = serializers.CharField(allow_blank=True)
    time_spent_ms = BoundedIntegerField(allow_null=True)
    gold = serializers.ChoiceField(
        choices=["correct", "wrong"],
        allow_null=True,
        help_text="On a gold pair: whether this judgment matched its known answer.",
    )
    other_judgments = BoundedIntegerField()
    agrees_with_others = serializers.BooleanField(
        allow_null=True, help_text="Sided with the strict majority of the others on the pair."
    )


class AnnotatorHistorySerializer(serializers.Serializer):
    """One annotator's own record: totals, gold accuracy with its 95% Wilson interval."""

    annotator_id = BoundedIntegerField()
    username = serializers.CharField()
    judgments = BoundedIntegerField()
    gold_judged = BoundedIntegerField()
    gold_correct = BoundedIntegerField()
    gold_accuracy = serializers.FloatField(allow_null=True)
    gold_low = serializers.FloatField(allow_null=True)
    gold_high = serializers.FloatField(allow_null=True)
    agreement_with_others = serializers.FloatField(allow_null=True)
    left_bias = serializers.FloatField(allow_null=True)
    median_seconds = serializers.FloatField(allow_null=True)
    rounds = HistoryRoundSerializer(many=True)
    latest = HistoryJudgmentSerializer(many=True, help_text="Newest first, at most 200.")
    written_answers = BoundedIntegerField(help_text="Demonstrations written or rewritten.")
    ratings = BoundedIntegerField(help_text="Items whose two answers were rated.")
    rankings = BoundedIntegerField(help_text="Items whose answers were ranked.")


class PairPromptSerializer(serializers.Serializer):
    id = BoundedIntegerField()
    text = serializers.CharField(allow_null=True)
    messages = serializers.JSONField(allow_null=True)


class PairAnswerSerializer(serializers.Serializer):
    side = serializers.CharField(help_text="a or b; a ranking item's answers by their place.")
    response_id = BoundedIntegerField()
    text = serializers.CharField(allow_blank=True)
    # A declared field shadows DRF's Field.source only for the type checker: the metaclass
    # collects declared fields off the class.
    source = serializers.CharField()  # type: ignore[assignment]
    model_version = BoundedIntegerField(allow_null=True)
    model_version_number = BoundedIntegerField(
        allow_null=True, help_text="The writing policy version's number (v0 is the base)."
    )
    external_model = serializers.CharField(allow_blank=True)


class PairJudgmentSerializer(serializers.Serializer):
    id = BoundedIntegerField()
    annotator_id = BoundedIntegerField()
    username = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    choice = serializers.CharField()
    a_on_left = serializers.BooleanField(help_text="Whether answer a was on the left.")
    strength = serializers.CharField(allow_null=True)
    rationale = serializers.CharField(allow_blank=True)
    time_spent_ms = BoundedIntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class PairResolutionSerializer(serializers.Serializer):
    label = serializers.CharField(  # type: ignore[assignment]
        help_text="a, b, tie, both_bad, or disagreement."
    )
    agreement = serializers.FloatField()
    counts = serializers.DictField(child=BoundedIntegerField())


class PairDemonstrationSerializer(serializers.Serializer):
    id = BoundedIntegerField()
    username = serializers.CharField()
    text = serializers.CharField(allow_blank=True)
    edited_from = BoundedIntegerField(allow_null=True, help_text="The response it rewrote.")
    review_status = serializers.ChoiceField(choices=ReviewStatus.choices)
    created_at = serializers.DateTimeField()


class PairRatingSerializer(serializers.Serializer):
    username = serializers.CharField()
    scale = serializers.ChoiceField(choices=RatingScale.choices)
    score_a = BoundedIntegerField()
    score_b = BoundedIntegerField()
    created_at = serializers.DateTimeField()


class PairRankingSerializer(serializers.Serializer):
    username = serializers.CharField()
    ranks = serializers.DictField(
        child=BoundedIntegerField(), help_text="Response id to rank, 1 = best."
    )
    created_at = serializers.DateTimeField()


class ComparisonDetailSerializer(serializers.Serializer):
    """One pair with every judgment on it, for review."""

    id = BoundedIntegerField()
    round = BoundedIntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=ComparisonStatus.choices)
    required_annotations = BoundedIntegerField()
    priority = serializers.FloatField()
    gold_outcome = serializers.CharField(allow_null=True)
    selection = serializers.JSONField()
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    prompt = PairPromptSerializer()
    kind = serializers.ChoiceField(choices=FeedbackKind.choices)
    answers = PairAnswerSerializer(many=True)
    listed_answers = PairAnswerSerializer(many=True, help_text="A ranking item's k answers.")
    judgments = PairJudgmentSerializer(many=True)
    demonstrations = PairDemonstrationSerializer(many=True)
    ratings = PairRatingSerializer(many=True)
    rankings = PairRankingSerializer(many=True)
    resolution = PairResolutionSerializer()
    posterior_a = serializers.FloatField(
        allow_null=True, help_text="Crowd model: P(answer a is the better one); null if undecided."
    )


class DemonstrationOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Demonstration
        fields = [
            "id", "prompt", "comparison", "annotator", "text", "edited_from", "time_spent_ms",
            "source", "review_status", "reviewed_by", "reviewed_at", "created_at",
        ]  # fmt: skip


class DemonstrationFilterSerializer(serializers.Serializer):
    review_status = serializers.ChoiceField(choices=ReviewStatus.choices, required=False)


class DemonstrationReviewInputSerializer(serializers.Serializer):
    accepted = serializers.BooleanField(help_text="true accepts the answer for training.")


class PauseInputSerializer(serializers.Serializer):
    paused = serializers.BooleanField()


class ExternalComparisonInputSerializer(serializers.Serializer):
    prompt_id = BoundedIntegerField()
    answer_a = serializers.CharField(trim_whitespace=False, max_length=200_000)
    answer_b = serializers.CharField(trim_whitespace=False, max_length=200_000)
    model_a = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    model_b = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    priority = serializers.FloatField(required=False, default=0.0)
    gold_outcome = serializers.ChoiceField(choices=Outcome.choices, required=False, allow_null=True)


class ComparisonOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Comparison
        fields = [
            "id",
            "prompt",
            "round",
            "response_a",
            "response_b",
            "required_annotations",
            "judgment_count",
            "status",
            "priority",
            "gold_outcome",
            "selection",
            "created_at",
            "completed_at",
        ]


class RoundOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Round
        fields = ["id", "number", "policy", "status", "quota", "opened_at", "closed_at"]


class ComparisonFilterSerializer(serializers.Serializer):
    """Query parameters of the comparison list; an unknown value is a 400, not an empty page."""

    status = serializers.ChoiceField(choices=ComparisonStatus.choices, required=False)
    round = BoundedIntegerField(min_value=1, required=False, help_text="A round's number.")


class MembershipInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=MemberRole.choices, default=MemberRole.ANNOTATOR)
    # Left out: unchanged (a new member does not share).
    shares_served_traffic = serializers.BooleanField(required=False)


class MembershipOutputSerializer(serializers.Serializer):
    user_id = BoundedIntegerField()
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()
    paused = serializers.BooleanField()
    shares_served_traffic = serializers.BooleanField()
