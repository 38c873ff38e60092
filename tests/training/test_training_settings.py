"""A project's training settings and a run's config are typed and checked when written."""

from __future__ import annotations

import pytest

from config.errors import ApplicationError
from training.engine.config import PPOConfig
from training.models import RunKind, TrainingRun
from training.project_settings import (
    run_config_errors,
    training_settings_effective,
    training_settings_parse,
)
from training.services import training_run_create

URL = "/api/projects/{}/training-settings/"


def test_get_shows_every_setting_with_its_default(admin_api, project):
    view = admin_api.get(URL.format(project.pk)).json()
    assert view["values"] == view["defaults"] and view["overrides"] == {}
    body = view["values"]
    assert body["dpo"]["beta"] == 0.1 and body["dpo"]["loss_type"] == "sigmoid"
    assert body["reward"]["strength_margins"] == {"slight": 0.0, "clear": 0.5, "strong": 1.0}
    assert body["evaluation"]["heldout_fraction"] == 0.2
    assert body["policy_data"] == "round"
    assert "base_model" not in body["dpo"]  # the project decides it, not a setting


def test_put_stores_overrides_and_reads_them_back(admin_api, project):
    response = admin_api.put(
        URL.format(project.pk),
        {"dpo": {"beta": 0.3, "lora": {"r": 8}}, "policy_data": "all"},
        format="json",
    )
    assert response.status_code == 200, response.content
    view = response.json()
    assert view["values"]["dpo"]["beta"] == 0.3 and view["defaults"]["dpo"]["beta"] == 0.1
    assert view["values"]["dpo"]["lora"]["r"] == 8
    assert view["values"]["dpo"]["lora"]["alpha"] == view["defaults"]["dpo"]["lora"]["alpha"]
    assert view["overrides"] == {"dpo": {"beta": 0.3, "lora": {"r": 8}}, "policy_data": "all"}
    project.refresh_from_db()
    assert project.training_settings == {
        "dpo": {"beta": 0.3, "lora": {"r": 8}},
        "policy_data": "all",
    }


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"dpoo": {"beta": 0.2}}, "training_settings.dpoo"),
        ({"dpo": {"betta": 0.2}}, "training_settings.dpo.betta"),
        ({"dpo": {"beta": "high"}}, "training_settings.dpo.beta"),
        ({"dpo": {"loss_type": "sigmoidd"}}, "training_settings.dpo.loss_type"),
        ({"dpo": {"lora": {"rank": 8}}}, "training_settings.dpo.lora.rank"),
        ({"reward": {"use_lora": "yes"}}, "training_settings.reward.use_lora"),
        ({"reward": {"learning_rate": 5}}, "training_settings.reward"),  # out of range
        ({"ppo": {"base_model": "other"}}, "training_settings.ppo"),
        ({"evaluation": {"max_prompts": 2.5}}, "training_settings.evaluation.max_prompts"),
        ({"policy_data": "everything"}, "training_settings.policy_data"),
        ({"rloo": []}, "training_settings.rloo"),
    ],
)
def test_a_bad_setting_is_a_400_naming_the_field_and_nothing_is_stored(
    admin_api, project, values, named
):
    before = dict(project.training_settings)
    response = admin_api.put(URL.format(project.pk), values, format="json")
    assert response.status_code == 400
    assert named in response.json()["detail"]
    project.refresh_from_db()
    assert project.training_settings == before


def test_a_type_error_says_the_type_as_a_person_reads_it(admin_api, project):
    detail = admin_api.put(URL.format(project.pk), {"dpo": {"beta": "high"}}, format="json")
    assert detail.json()["detail"] == "training_settings.dpo.beta: expected float, got 'high'."


def test_only_admins_change_settings(annotator_api, token_api, project):
    assert annotator_api.get(URL.format(project.pk)).status_code == 403
    assert token_api.get(URL.format(project.pk)).status_code == 200
    response = token_api.put(URL.format(project.pk), {"dpo": {"beta": 0.2}}, format="json")
    assert response.status_code == 403


def test_effective_settings_lay_overrides_over_defaults():
    settings = training_settings_parse({"rloo": {"samples_per_prompt": 6}})
    effective = training_settings_effective(settings)
    assert effective["rloo"]["samples_per_prompt"] == 6
    assert effective["ppo"]["samples_per_prompt"] == PPOConfig().samples_per_prompt


def test_a_run_config_is_checked_when_the_run_is_created(project, no_broker):
    with pytest.raises(ApplicationError, match=r"config\.bta"):
        training_run_create(project=project, kind=RunKind.DPO, config={"bta": 0.2})
    with pytest.raises(ApplicationError, match=r"config\.max_prompts"):
        training_run_create(project=project, kind=RunKind.GENERATE, config={"max_prompts": "9"})
    assert not TrainingRun.objects.exists() and not no_broker
    assert run_config_errors(RunKind.DPO, {"beta": 0.2}) == []
    assert run_config_errors(RunKind.EVALUATE, {"x": 1}) == [
        "config.x: evaluate runs take no settings."
    ]


def test_the_api_refuses_a_bad_run_config_with_a_400(admin_api, project, no_broker):
    response = admin_api.post(
        f"/api/projects/{project.pk}/runs/",
        {"kind": "reward", "config": {"epochs": "many"}},
        format="json",
    )
    assert response.status_code == 400
    assert "config.epochs" in response.json()["detail"]
