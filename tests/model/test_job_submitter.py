"""Who submitted a job and why: decoded from requests, kept by the store's codec, and
absent (None) in job documents written before the fields existed."""

from __future__ import annotations

import pytest

from extjobs.engine.submission import build_jobs
from extjobs.errors import InputError
from extjobs.model import codec
from extjobs.model.jobs import Job
from extjobs.model.requests import decode_job_request

DELAY = {"OP_ID": "OP_TEST_DELAY", "duration": 0}


def test_reason_is_decoded_and_carried_into_the_job() -> None:
    request = decode_job_request({"ops": [DELAY], "reason": "disk swap on node2"})
    assert request.reason == "disk swap on node2"
    assert request.submitter is None
    (job,), _ = build_jobs([request], [7], 1.0)
    assert job.reason == "disk swap on node2"


@pytest.mark.parametrize(
    "reason",
    [pytest.param(5, id="int"), pytest.param("x" * 1025, id="long"), pytest.param("a\nb", id="nl")],
)
def test_bad_reasons_are_refused(reason: object) -> None:
    with pytest.raises(InputError, match="reason"):
        decode_job_request({"ops": [DELAY], "reason": reason})


def test_a_submitter_cannot_be_claimed_in_the_body() -> None:
    with pytest.raises(InputError, match="unknown field"):
        decode_job_request({"ops": [DELAY], "submitter": "root"})


def test_job_documents_without_the_fields_stay_readable() -> None:
    doc = codec.unstructure(Job(id=1, ops=(), submitter="rapi:jack", reason="why"))
    assert codec.CONVERTER.structure(doc, Job).submitter == "rapi:jack"
    old = {k: v for k, v in doc.items() if k not in ("submitter", "reason")}
    job = codec.CONVERTER.structure(old, Job)
    assert (job.submitter, job.reason) == (None, None)
