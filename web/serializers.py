"""Input and output shapes of the web UI's own endpoints."""

from typing import Any

from rest_framework import serializers

from annotate.models import MemberRole
from config.validation import BoundedIntegerField


class LoginInputSerializer(serializers.Serializer[Any]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class MyProjectSerializer(serializers.Serializer[Any]):
    id = BoundedIntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    role = serializers.CharField(help_text="annotator, client, or admin for staff")
    paused = serializers.BooleanField()


class MeSerializer(serializers.Serializer[Any]):
    id = BoundedIntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    projects = MyProjectSerializer(many=True)


class ProgressSerializer(serializers.Serializer[Any]):
    judged_today = BoundedIntegerField()
    judged_total = BoundedIntegerField()
    left_in_round = BoundedIntegerField()
    round = BoundedIntegerField(allow_null=True)


class RoundSummarySerializer(serializers.Serializer[Any]):
    number = BoundedIntegerField()
    status = serializers.CharField()
    quota = BoundedIntegerField()
    comparisons = BoundedIntegerField()
    complete = BoundedIntegerField()
    judgments = BoundedIntegerField()
    percent_agreement = serializers.FloatField(allow_null=True)
    krippendorff_alpha = serializers.FloatField(allow_null=True)
    reward_accuracy = serializers.FloatField(allow_null=True)
    reward_accuracy_pairs = BoundedIntegerField(allow_null=True)
    reward_accuracy_low = serializers.FloatField(allow_null=True)
    reward_accuracy_high = serializers.FloatField(allow_null=True)
    policy_win_rate = serializers.FloatField(allow_null=True)
    policy_win_rate_n = BoundedIntegerField(allow_null=True)
    policy_win_rate_low = serializers.FloatField(allow_null=True)
    policy_win_rate_high = serializers.FloatField(allow_null=True)
    reachable = BoundedIntegerField(allow_null=True)


class UserMembershipSerializer(serializers.Serializer[Any]):
    project_id = BoundedIntegerField()
    project = serializers.CharField()
    role = serializers.CharField()
    paused = serializers.BooleanField()


class UserRowSerializer(serializers.Serializer[Any]):
    id = BoundedIntegerField()
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    is_active = serializers.BooleanField()
    memberships = UserMembershipSerializer(many=True)
    token_prefix = serializers.CharField(allow_null=True)
    token_created = serializers.DateTimeField(allow_null=True)


class UserCreateInputSerializer(serializers.Serializer[Any]):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    is_staff = serializers.BooleanField(default=False)
    project_id = BoundedIntegerField(required=False, help_text="Add to this project at once.")
    role = serializers.ChoiceField(choices=MemberRole.choices, default=MemberRole.ANNOTATOR)


class UserUpdateInputSerializer(serializers.Serializer[Any]):
    is_active = serializers.BooleanField()


class TokenOutputSerializer(serializers.Serializer[Any]):
    user_id = BoundedIntegerField()
    key = serializers.CharField(help_text="Shown once; store it now.")
