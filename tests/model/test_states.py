from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extjobs.errors import IllegalTransitionError
from extjobs.model.states import (
    OP_TRANSITIONS,
    JobStatus,
    OpStatus,
    advance_op,
    derive_job_status,
)


@given(st.lists(st.sampled_from(list(OpStatus)), max_size=30))
def test_random_event_sequences_follow_the_table(events: list[OpStatus]) -> None:
    status = OpStatus.QUEUED
    for new in events:
        if new in OP_TRANSITIONS[status]:
            status = advance_op(status, new)
        else:
            before = status
            with pytest.raises(IllegalTransitionError):
                advance_op(status, new)
            assert status is before
    # Once final, nothing moves it.
    if status.finalized:
        for new in OpStatus:
            with pytest.raises(IllegalTransitionError):
                advance_op(status, new)


def test_final_states_have_no_exits() -> None:
    for status in OpStatus:
        assert status.finalized == (not OP_TRANSITIONS[status])


@given(st.lists(st.sampled_from(list(OpStatus)), min_size=1, max_size=8))
def test_job_status_is_derived_consistently(ops: list[OpStatus]) -> None:
    job = derive_job_status(ops)
    if all(op is OpStatus.SUCCESS for op in ops):
        assert job is JobStatus.SUCCESS
    if job.finalized:
        # A finished job has no opcode still moving.
        assert (
            not any(op in (OpStatus.RUNNING, OpStatus.WAITING, OpStatus.CANCELING) for op in ops)
            or job is not JobStatus.SUCCESS
        )
    if OpStatus.CANCELING in ops:
        assert job is JobStatus.CANCELING
    elif OpStatus.ERROR in ops and OpStatus.CANCELED not in ops:
        assert job is JobStatus.ERROR
    elif OpStatus.RUNNING in ops and OpStatus.CANCELED not in ops:
        assert job is JobStatus.RUNNING


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        pytest.param([OpStatus.QUEUED, OpStatus.QUEUED], JobStatus.QUEUED, id="all-queued"),
        pytest.param([OpStatus.SUCCESS, OpStatus.QUEUED], JobStatus.RUNNING, id="between-ops"),
        pytest.param([OpStatus.WAITING, OpStatus.QUEUED], JobStatus.WAITING, id="waiting"),
        pytest.param([OpStatus.SUCCESS, OpStatus.ERROR], JobStatus.ERROR, id="second-failed"),
        pytest.param([OpStatus.CANCELED, OpStatus.CANCELED], JobStatus.CANCELED, id="canceled"),
        pytest.param([OpStatus.SUCCESS, OpStatus.SUCCESS], JobStatus.SUCCESS, id="success"),
    ],
)
def test_job_status_examples(ops: list[OpStatus], expected: JobStatus) -> None:
    assert derive_job_status(ops) is expected


def test_job_and_op_status_are_different_enums() -> None:
    assert OpStatus.SUCCESS != JobStatus.SUCCESS or OpStatus is not JobStatus
    assert not isinstance(OpStatus.SUCCESS, JobStatus)
