"""Many annotators at once, on real threads and connections: no over-quota, no duplicates."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.db.models import Count

from annotate.models import Assignment, Comparison, Judgment
from annotate.services import assignment_lease_next, judgment_submit
from tests.annotate.test_judging import annotators, make_round

pytestmark = pytest.mark.django_db(transaction=True)


def judge_until_empty(project, annotator, errors: list) -> None:
    try:
        while True:
            lease = assignment_lease_next(project=project, annotator=annotator)
            if lease is None:
                return
            judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="left")
            # A retry racing with nothing must still count once.
            judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="left")
    except Exception as error:  # collected and re-raised in the test thread
        errors.append(error)
    finally:
        connection.close()


def test_eight_concurrent_annotators_fill_every_pair_exactly_to_its_overlap(project):
    make_round(project, prompts=30, required=3)
    users = annotators(project, 8)
    errors: list = []
    threads = [threading.Thread(target=judge_until_empty, args=(project, u, errors)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    counts = Comparison.objects.annotate(n=Count("judgments")).values_list(
        "n", "judgment_count", "required_annotations", "status"
    )
    assert all(n == stored == required == 3 for n, stored, required, _ in counts)
    assert {status for *_, status in counts} == {"complete"}
    assert Judgment.objects.count() == 90
    per_annotator_pair = Judgment.objects.values("comparison", "annotator").annotate(n=Count("id"))
    assert max(row["n"] for row in per_annotator_pair) == 1


def test_one_annotator_asking_from_many_tabs_at_once_holds_one_lease(project):
    make_round(project, prompts=10, required=1)
    [user] = annotators(project, 1)
    leases: list = []
    errors: list = []

    def ask() -> None:
        try:
            leases.append(assignment_lease_next(project=project, annotator=user).pk)
        except Exception as error:  # collected and re-raised in the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(leases) == 6 and len(set(leases)) == 1
    assert Assignment.objects.filter(annotator=user).count() == 1
