"""Export collected preferences, streamed: lines are yielded as the database hands rows over.

Memory stays constant however large the project: every query runs with
`.iterator(chunk_size=EXPORT_CHUNK_SIZE)` and nothing collects the whole file.

- TRL preference JSONL (conversational): one row per *complete* comparison whose judgments
  resolve (annotate.quality.resolve) to a or b. A pair still collecting judgments may yet change
  its label, so it waits. Ties, "both bad" and disagreements (no strict majority) are left out:
  TRL's trainers have no notion of a tie. `include_ties` adds ties with "tie": true, which
  Tandem's own engine trains as P(chosen better) = 0.5. "weight" is the agreement (the share of
  judgments that voted for the label), so a 2-of-3 pair counts less than a unanimous one; with
  `resolution="crowd"` the crowd model labels the pairs (annotate.crowd) and "weight" is its
  posterior for the label, so a careless annotator's vote moves little.
  Pairs whose two answers are the same text after trimming are left out too: nothing to learn,
  and the engine refuses such rows.
- Raw judgments as JSONL and CSV, one row per judgment, for analysis. CSV cells are untrusted
  (annotators write rationales; usernames may start with "@"): a text cell starting with =, +,
  -, @, tab or carriage return gets a leading single quote so a spreadsheet shows it as text
  instead of running it as a formula (OWASP "CSV injection"). JSONL is left verbatim.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from annotate import feedback
from annotate.feedback import demonstration, pairwise, rating
from annotate.models import Judgment, Project
from annotate.selectors import LabelResolution, label_posterior

EXPORT_CHUNK_SIZE = pairwise.EXPORT_CHUNK_SIZE
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
JUDGMENT_COLUMNS = (
    "judgment_id",
    "comparison_id",
    "prompt_id",
    "annotator",
    "choice",
    "outcome",
    "strength",
    "rationale",
    "time_spent_ms",
    "left_response_id",
    "right_response_id",
    "source",
    "created_at",
)


def _jsonl(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


# --- TRL preference pairs -------------------------------------------------------------------


def trl_rows(
    *, project: Project, include_ties: bool = False, resolution: LabelResolution = "majority"
) -> Iterator[dict[str, Any]]:
    pairs = feedback.resolved_pairs(
        project=project,
        include_ties=include_ties,
        crowd=label_posterior(project=project, resolution=resolution),
    )
    for pair in pairs:
        row = {
            "prompt": pair.prompt,
            "chosen": [{"role": "assistant", "content": pair.chosen}],
            "rejected": [{"role": "assistant", "content": pair.rejected}],
            "agreement": pair.agreement,
            "weight": pair.weight,
            "strength": pair.strength,  # the engine's reader turns it into a margin / weight
            "judgments": pair.judgments,
            "annotator_ids": list(pair.annotator_ids),
            "comparison_id": pair.comparison_id,
            "prompt_id": pair.prompt_id,
            "round_id": pair.round_id,
            "selection": pair.selection,  # strategy, reward scores: which pairs were chosen how
        }
        if include_ties:
            row["tie"] = pair.is_tie
        yield row


def trl_jsonl_lines(
    *, project: Project, include_ties: bool = False, resolution: LabelResolution = "majority"
) -> Iterator[str]:
    for row in trl_rows(project=project, include_ties=include_ties, resolution=resolution):
        yield _jsonl(row)


# --- TRL SFT demonstrations -----------------------------------------------------------------


def sft_rows(*, project: Project) -> Iterator[dict[str, Any]]:
    """Accepted demonstrations in TRL's conversational SFT shape: the prompt's turns, then the
    written answer as the assistant's (model outputs and answers stay plain JSON strings)."""
    for shown in demonstration.accepted_demonstrations(project=project):
        yield {
            "messages": [*shown.prompt, {"role": "assistant", "content": shown.completion}],
            "demonstration_id": shown.demonstration_id,
            "prompt_id": shown.prompt_id,
            "round_id": shown.round_id,
            "edited_from": shown.edited_from,
            "source": shown.source,
        }


def sft_jsonl_lines(*, project: Project) -> Iterator[str]:
    for row in sft_rows(project=project):
        yield _jsonl(row)


# --- TRL unpaired preferences (KTO) --------------------------------------------------------


def kto_rows(*, project: Project, desirable_score: int = 5) -> Iterator[dict[str, Any]]:
    """Every rated answer in TRL's conversational unpaired-preference shape: prompt turns, the
    answer as the assistant's, and `label` true when its score reaches `desirable_score` (a
    thumbs up is 7, a thumbs down 1)."""
    for rated in rating.rated_answers(project=project):
        yield {
            "prompt": rated.prompt,
            "completion": [{"role": "assistant", "content": rated.completion}],
            "label": rated.score >= desirable_score,
            "score": rated.score,
            "scale": rated.scale,
            "rating_id": rated.rating_id,
            "comparison_id": rated.comparison_id,
            "prompt_id": rated.prompt_id,
            "round_id": rated.round_id,
        }


def kto_jsonl_lines(*, project: Project, desirable_score: int = 5) -> Iterator[str]:
    for row in kto_rows(project=project, desirable_score=desirable_score):
        yield _jsonl(row)


# --- Raw judgments --------------------------------------------------------------------------


def judgment_rows(*, judgments: QuerySet[Judgment]) -> Iterator[dict[str, Any]]:
    """One flat dict per judgment; `judgments` comes from selectors.judgments_visible_to."""
    rows = (
        judgments.select_related("comparison", "annotator")
        .only(
            "id",
            "choice",
            "strength",
            "rationale",
            "time_spent_ms",
            "left_response",
            "right_response",
            "source",
            "created_at",
            "comparison__id",
            "comparison__prompt",
            "comparison__response_a",
            "annotator__username",
        )
        .order_by("id")
    )
    for judgment in rows.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        yield {
            "judgment_id": judgment.pk,
            "comparison_id": judgment.comparison_id,
            "prompt_id": judgment.comparison.prompt_id,
            "annotator": judgment.annotator.username,
            "choice": judgment.choice,
            "outcome": judgment.outcome,
            "strength": judgment.strength,
            "rationale": judgment.rationale,
            "time_spent_ms": judgment.time_spent_ms,
            "left_response_id": judgment.left_response_id,
            "right_response_id": judgment.right_response_id,
            "source": judgment.source,
            "created_at": judgment.created_at.isoformat(),
        }


def judgments_jsonl_lines(*, judgments: QuerySet[Judgment]) -> Iterator[str]:
    for row in judgment_rows(judgments=judgments):
        yield _jsonl(row)


def csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will not execute: see the module docstring."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class _Echo:
    """A file-like whose write returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def judgments_csv_lines(*, judgments: QuerySet[Judgment]) -> Iterator[str]:
    writer = csv.writer(_Echo())  # QUOTE_MINIMAL: commas, quotes and newlines are quoted
    yield writer.writerow(JUDGMENT_COLUMNS)
    for row in judgment_rows(judgments=judgments):
        yield writer.writerow([csv_safe(row[column]) for column in JUDGMENT_COLUMNS])
