"""The API's JSON answers."""

from __future__ import annotations

import json

from extjobs.api.views import JSONResponse


def test_api_answers_are_utf8_json_and_take_any_integer() -> None:
    answer = JSONResponse({"name": "wéb1", "n": 2**70, "ok": [1.5, None]}, status_code=201)
    assert answer.status_code == 201
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.body.decode("utf-8")) == {
        "name": "wéb1",
        "n": 2**70,
        "ok": [1.5, None],
    }
    assert "wéb1".encode() in JSONResponse({"name": "wéb1"}).body
