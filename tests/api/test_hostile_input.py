"""Hostile input at the API: Hypothesis-generated bodies get 4xx naming the field, never 500.

The app runs in-process on a real store; no node is contacted because nothing is
dispatched (the queue's dispatcher is not started), so every answer is the API's and
the decoder's alone.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extjobs.api.server import MAX_BODY, build_app
from extjobs.engine.configmgr import ConfigManager
from extjobs.engine.queue import JobQueue
from extjobs.model.config import Config
from extjobs.model.opcodes import OPCODES
from extjobs.model.requests import MAX_TEXT
from extjobs.nodes.ssh import SSHRunner
from extjobs.store.sqlite import SqliteStore

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


#: What a name is made of (a valid one, before the edge is added).
names = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
#: Characters no name may hold: invisible, bidirectional, combining, look-alike, control.
ODD = [
    "\u200b",
    "\u202e",
    "\ufeff",
    "\u0301",
    "\u00e9",
    "\uff4e",
    "\U0001f600",
    "\x7f",
    "\x1b",
    "\t",
]


def joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


#: Strings no field of any opcode may hold: NUL, a lone surrogate (sent as JSON's
#: ``\\ud800`` escape: it has no UTF-8 form), more than MAX_TEXT characters.
never_text = st.one_of(
    joined(names, st.just("\0"), names),
    joined(names, st.integers(0xD800, 0xDFFF).map(chr), names),
    st.integers(MAX_TEXT + 1, 3 * MAX_TEXT).map(lambda n: "n" * n),
)

#: Strings no name may be: the above, a trailing or leading newline or space, an odd
#: character, empty, or longer than any name's limit (63; 255 for a provider).
never_names = st.one_of(
    never_text,
    joined(names, st.sampled_from(["\n", "\r\n", " ", "\n\n"])),
    joined(st.sampled_from(["\n", " "]), names),
    joined(names, st.sampled_from(ODD), names),
    st.just(""),
    st.integers(256, MAX_TEXT).map(lambda n: "n" * n),
)


def field_values() -> st.SearchStrategy[Any]:
    return (
        json_values
        | never_names
        | st.sampled_from(
            ["../etc", "a/b", "$(reboot)", "", " ", "x" * 300, "-1", "1e999", "node1", -1, 0, 2**70]
        )
    )


@st.composite
def opcodes(draw: st.DrawFn) -> dict[str, Any]:
    op_id = draw(st.sampled_from(sorted(OPCODES)) | st.text(max_size=12))
    cls = OPCODES.get(op_id)
    names = [a.name for a in attrs.fields(cls)] if cls is not None else ["x"]
    keys = draw(st.lists(st.sampled_from(names or ["x"]) | st.text(max_size=8), max_size=5))
    body: dict[str, Any] = {"OP_ID": op_id}
    for key in keys:
        body[key] = draw(field_values())
    return body


bodies = st.one_of(
    json_values,
    st.lists(opcodes(), max_size=3),
    st.builds(
        lambda ops, p, d: {"ops": ops, "priority": p, "depends": d},
        st.lists(opcodes(), max_size=3),
        field_values(),
        field_values(),
    ),
    st.builds(lambda jobs: {"jobs": jobs}, st.lists(st.lists(opcodes(), max_size=2), max_size=3)),
)


class App:
    def __init__(self, tmp: Path) -> None:
        config = Config(state_dir=tmp)
        self.store = SqliteStore(tmp / "db.sqlite")
        self.queue = JobQueue(self.store, ConfigManager(self.store), SSHRunner(config.ssh), config)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(self.queue)), base_url="http://t"
        )

    def job_count(self) -> int:
        return len(self.store.load_jobs(include_archived=True))


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    instance = App(tmp_path)
    yield instance
    await instance.client.aclose()
    instance.store.close()


def check_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"]
    return dict(error)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
async def test_random_submissions_never_500(app: App, body: Any) -> None:
    before = app.job_count()
    response = await app.client.post("/v1/jobs", content=json.dumps(body))
    if response.status_code == 201:
        ids = response.json()["job_ids"]
        assert app.job_count() == before + len(ids)
        return
    assert 400 <= response.status_code < 500, response.text
    error = check_error(response)
    assert error.get("field"), error  # the message names what is wrong
    assert app.job_count() == before  # no partial change


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        pytest.param(
            {"ops": [{"OP_ID": "OP_NOPE"}]},
            "job.ops[0].OP_ID",
            "unknown opcode",
            id="unknown-opcode",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_NODE_ADD", "node_name": "../x"}]},
            "node_name",
            "invalid node name",
            id="node-name-slash",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/x", "provider": "../etc"}]},
            None,
            None,
            id="provider-dotdot",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_NODE_ADD", "node_name": "n", "port": 70000}]},
            "port",
            "out of range",
            id="port-range",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": "1h"}]},
            "job.ops[0].duration",
            "expected float",
            id="duration-junk",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_TEST_DELAY"}], "priority": 99},
            "priority",
            "out of range",
            id="priority-range",
        ),
        pytest.param(
            {"ops": [{"OP_ID": "OP_TEST_DELAY"}], "extra": 1},
            "job.extra",
            "unknown field",
            id="unknown-field",
        ),
        pytest.param({"ops": []}, "job.ops", "non-empty", id="no-ops"),
    ],
)
async def test_named_bad_inputs(app: App, body: Any, field: str | None, text: str | None) -> None:
    response = await app.client.post("/v1/jobs", json=body)
    if field is None:
        # Decodes (provider names are checked by the LU before any I/O), but never a 500.
        assert response.status_code in (201, 400)
        return
    assert response.status_code == 400
    error = check_error(response)
    assert error["field"] == field
    assert text in error["message"]


async def test_request_size_limit(app: App) -> None:
    big = json.dumps({"ops": [{"OP_ID": "OP_TEST_DELAY", "x": "y" * MAX_BODY}]})
    response = await app.client.post("/v1/jobs", content=big)
    assert response.status_code == 413
    assert app.job_count() == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/v1/jobs/abc", 400, id="job-id-not-int"),
        pytest.param("GET", "/v1/jobs/999", 404, id="no-such-job"),
        pytest.param("GET", "/v1/jobs?status=bogus", 400, id="bad-status-filter"),
        pytest.param("GET", "/v1/jobs/1/wait?since=x", 400, id="bad-since"),
        pytest.param("GET", "/v1/jobs/1/wait?timeout=-1", 400, id="bad-timeout"),
        pytest.param("POST", "/v1/jobs/999/cancel", 404, id="cancel-unknown"),
        pytest.param("DELETE", "/v1/jobs", 405, id="bad-method"),
        pytest.param("GET", "/v2/jobs", 404, id="unknown-path"),
    ],
)
async def test_bad_requests(app: App, method: str, path: str, status: int) -> None:
    response = await app.client.request(method, path)
    assert response.status_code == status
    check_error(response)


async def test_not_json(app: App) -> None:
    response = await app.client.post("/v1/jobs", content=b"\xff{nope")
    assert response.status_code == 400
    assert check_error(response)["field"] == "body"


def _create(params: dict[str, str]) -> dict[str, Any]:
    disk = {"size": 4, "provider": "sharedfile", "params": params}
    return {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "big", "pnode": "n1", "disks": [disk]}


@pytest.mark.parametrize(
    ("op", "field", "text"),
    [
        pytest.param(
            _create({"dir": "x" * 200_000}),
            "params",
            "is 200000 bytes long, at most 4096",
            id="huge-value",
        ),
        pytest.param(
            _create({f"p{i}": "v" for i in range(40)}),
            "params",
            "40 disk parameters, at most 32",
            id="too-many",
        ),
        pytest.param(
            _create({f"p{i}": "v" * 4000 for i in range(5)}),
            "params",
            "at most 16384",
            id="too-much-in-all",
        ),
        pytest.param(
            _create({"n" * 100: "v"}),
            "params",
            "100 characters long, at most 64",
            id="long-name",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_ADD", "node_name": "n9", "address": "10.0.0.1\x00; reboot"},
            "address",
            "invalid node address",
            id="address-nul",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_ADD", "node_name": "n9", "address": "nöde.example"},
            "address",
            "invalid node address",
            id="address-non-ascii",
        ),
        pytest.param(
            {"OP_ID": "OP_NODE_ADD", "node_name": "n9", "address": "-oProxyCommand=x"},
            "address",
            "invalid node address",
            id="address-option",
        ),
    ],
)
async def test_oversized_and_malformed_values_are_400s_naming_field_and_limit(
    app: App, op: dict[str, Any], field: str, text: str
) -> None:
    response = await app.client.post("/v1/jobs", content=json.dumps([op]))
    assert response.status_code == 400, response.text
    error = check_error(response)
    assert error["field"].endswith(field), error
    assert text in error["message"]
    assert app.job_count() == 0


@pytest.mark.parametrize("address", ["10.0.0.11", "::1", "node1", "node-1.example.com."])
async def test_good_node_addresses_pass(app: App, address: str) -> None:
    op = {"OP_ID": "OP_NODE_ADD", "node_name": "n9", "address": address}
    response = await app.client.post("/v1/jobs", content=json.dumps([op]))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("job_id", [str(2**63), str(2**70), "0", "-1"])
async def test_job_ids_beyond_any_store_are_404_not_500(app: App, job_id: str) -> None:
    response = await app.client.get(f"/v1/jobs/{job_id}")
    assert response.status_code in (400, 404), response.text
    check_error(response)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/v1/jobs/" + "9" * 5000, 404, id="id-of-5000-digits"),
        pytest.param("GET", f"/v1/jobs/{2**64}/wait", 404, id="wait-huge-id"),
        pytest.param("POST", f"/v1/jobs/{2**64}/cancel", 404, id="cancel-huge-id"),
        pytest.param("POST", f"/v1/jobs/{2**64}/archive", 404, id="archive-huge-id"),
        pytest.param("GET", f"/v1/jobs/1/wait?since=-{2**64}&timeout=0", 400, id="since-below"),
        pytest.param("GET", f"/v1/jobs/1/wait?since={2**64}&timeout=0", 400, id="since-above"),
        pytest.param("GET", "/v1/jobs/1/wait?since=" + "9" * 5000, 400, id="since-5000-digits"),
        pytest.param("GET", "/v1/jobs/1_0", 400, id="id-with-underscore"),
        pytest.param("GET", "/v1/jobs/%D9%A1", 400, id="id-in-arabic-digits"),
        pytest.param("GET", "/v1/jobs/%201", 400, id="id-with-blank"),
    ],
)
async def test_huge_or_odd_numbers_in_urls_are_4xx_with_a_short_message(
    app: App, method: str, path: str, status: int
) -> None:
    submitted = await app.client.post("/v1/jobs", json=[{"OP_ID": "OP_TEST_DELAY"}])
    assert submitted.json() == {"job_ids": [1]}
    response = await app.client.request(method, path)
    assert response.status_code == status, response.text
    assert len(check_error(response)["message"]) < 200


# -- edge values in every field ----------------------------------------------------------------

#: Stands for "the key of this object" in a path below.
KEY = object()
CREATE = {
    "OP_ID": "OP_INSTANCE_CREATE",
    "instance_name": "i1",
    "pnode": "n1",
    "disks": [{"size": 4, "provider": "sharedfile", "params": {"dir": "/v"}}],
}
NODE_ADD = {
    "OP_ID": "OP_NODE_ADD",
    "node_name": "n9",
    "address": "10.0.0.9",
    "user": "root",
    "group": "default",
    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
    "search_path": ["/srv/extjobs/extstorage"],
}
INSTALL = {"OP_ID": "OP_EXTSTORAGE_INSTALL", "source": "/srv/p", "provider": "p", "group": "g"}
DELAY = {"OP_ID": "OP_TEST_DELAY", "on_nodes": ["n1"], "lock_instances": ["i1"]}
POOLS = {"OP_ID": "OP_CLUSTER_SET_PARAMS", "add_pools": {"p1": "sharedfile"}, "hv_run_dir": "/r"}
FENCE = {"OP_ID": "OP_NODE_SET_PARAMS", "node_name": "n1", "fence_command": ["/bin/fence", "x"]}
MIGRATE = {"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "i1", "target_node": "n2"}
RENAME = {"OP_ID": "OP_INSTANCE_RENAME", "instance_name": "i1", "new_name": "i2"}
GROUP_POOLS = {"OP_ID": "OP_GROUP_SET_PARAMS", "group_name": "g1", "connect_pools": ["p1"]}
INIT = {"OP_ID": "OP_CLUSTER_INIT", "cluster_name": "c1", "search_path": ["/s"]}

Path_ = tuple[Any, ...]

#: (opcode, path to a name in it, the field the error must name): the decoder checks
#: these as names, so no edge value of :data:`never_names` may pass.
NAME_FIELDS: list[tuple[dict[str, Any], Path_, str]] = [
    (CREATE, ("instance_name",), "instance_name"),
    (CREATE, ("pnode",), "pnode"),
    (CREATE, ("disks", 0, "provider"), "provider"),
    (CREATE, ("disks", 0, "pool"), "pool"),
    (CREATE, ("disks", 0, "name"), "name"),
    (CREATE, ("disks", 0, "params", KEY), "params"),
    (MIGRATE, ("target_node",), "target_node"),
    (RENAME, ("new_name",), "new_name"),
    (NODE_ADD, ("node_name",), "node_name"),
    (NODE_ADD, ("address",), "address"),
    (FENCE, ("node_name",), "node_name"),
    (INIT, ("cluster_name",), "cluster_name"),
    ({"OP_ID": "OP_GROUP_ADD", "group_name": "g1"}, ("group_name",), "group_name"),
    (GROUP_POOLS, ("connect_pools", 0), "connect_pools"),
    (POOLS, ("add_pools", KEY), "add_pools"),
    (POOLS, ("add_pools", "p1"), "add_pools"),
    (DELAY, ("on_nodes", 0), "on_nodes"),
    (DELAY, ("lock_instances", 0), "lock_instances"),
    ({"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "nodes": ["n1"]}, ("nodes", 0), "nodes"),
    ({"OP_ID": "OP_VOLUME_CLEANUP", "volume": "v1"}, ("volume",), "volume"),
]

#: Fields of free text (values passed verbatim, paths, keys, logins): a trailing newline
#: may be legitimate there, but nothing of :data:`never_text`.
TEXT_FIELDS: list[tuple[dict[str, Any], Path_, str]] = [
    (CREATE, ("disks", 0, "params", "dir"), "params"),
    (NODE_ADD, ("user",), "user"),
    (NODE_ADD, ("group",), "group"),
    (NODE_ADD, ("host_key",), "host_key"),
    (NODE_ADD, ("search_path", 0), "search_path"),
    (INSTALL, ("source",), "source"),
    (INSTALL, ("provider",), "provider"),
    (INSTALL, ("group",), "group"),
    (POOLS, ("hv_run_dir",), "hv_run_dir"),
    (FENCE, ("fence_command", 1), "fence_command"),
    ({"OP_ID": "OP_EXTSTORAGE_DIAGNOSE", "providers": ["p"]}, ("providers", 0), "providers"),
    (INIT, ("search_path", 0), "search_path"),
    # An unknown field is named by the opcode holding it.
    (DELAY, ("unknown_field",), "ops[0]"),
]


def put(op: dict[str, Any], path: Path_, value: str) -> dict[str, Any]:
    """A copy of ``op`` with ``value`` at ``path`` (``KEY`` last: as the object's key)."""
    out = copy.deepcopy(op)
    *parents, last = path
    target: Any = out
    for step in parents:
        target = target[step]
    if last is KEY:
        target[value] = target.pop(next(iter(target)))
    else:
        target[last] = value
    return out


def field_id(case: tuple[dict[str, Any], Path_, str]) -> str:
    op, path, _ = case
    return f"{op['OP_ID']}.{'.'.join('KEY' if p is KEY else str(p) for p in path)}"


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=field_id(c)) for c in NAME_FIELDS + TEXT_FIELDS]
)
async def test_every_template_is_accepted_as_it_is(
    app: App, case: tuple[dict[str, Any], Path_, str]
) -> None:
    """The bodies below differ from these only in the one field: what they get back is
    that field's doing."""
    op, path, _ = case
    if path == ("unknown_field",):
        return
    response = await app.client.post("/v1/jobs", content=json.dumps([op]))
    assert response.status_code == 201, response.text


async def refused_naming(app: App, op: dict[str, Any], field: str) -> None:
    before = app.job_count()
    # json.dumps escapes a lone surrogate as "\udXXX", as a hostile client would send it.
    response = await app.client.post("/v1/jobs", content=json.dumps({"ops": [op]}))
    assert response.status_code == 400, response.text[:500]
    error = check_error(response)
    assert field in (error.get("field") or ""), error
    assert app.job_count() == before


EDGE_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@EDGE_SETTINGS
@given(case=st.sampled_from(NAME_FIELDS), value=never_names)
async def test_a_name_with_an_edge_value_is_a_400_naming_it_and_no_job(
    app: App, case: tuple[dict[str, Any], Path_, str], value: str
) -> None:
    op, path, field = case
    await refused_naming(app, put(op, path, value), field)


@EDGE_SETTINGS
@given(case=st.sampled_from(NAME_FIELDS + TEXT_FIELDS), value=never_text)
async def test_nul_surrogates_and_huge_text_anywhere_are_a_400_naming_it_and_no_job(
    app: App, case: tuple[dict[str, Any], Path_, str], value: str
) -> None:
    op, path, field = case
    await refused_naming(app, put(op, path, value), field)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="top-level"),
        pytest.param(
            b'{"ops": [{"OP_ID": "OP_TEST_DELAY", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
            id="in-a-field",
        ),
    ],
)
async def test_deeply_nested_bodies_are_a_400(app: App, body: bytes) -> None:
    response = await app.client.post("/v1/jobs", content=body)
    assert response.status_code == 400, response.text[:300]
    assert check_error(response)["field"] == "body"
    assert app.job_count() == 0
