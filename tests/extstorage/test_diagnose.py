import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from extjobs.errors import InputError, NodeUnreachableError, ProviderError
from extjobs.extstorage.diagnose import (
    DIAGNOSE_SCRIPT,
    GroupProviderStatus,
    ProviderStatus,
    diagnose_command,
    parse_diagnose_output,
    summarise_groups,
)
from extjobs.extstorage.names import REQUIRED_ACTIONS

SCRIPT = "#!/bin/sh\nexit 0\n"


def make_provider(
    root: Path, name: str, *, params: str = "pool The pool\n", optional: Sequence[str] = ()
) -> Path:
    pdir = root / name
    pdir.mkdir(parents=True)
    for action in (*REQUIRED_ACTIONS, *optional):
        script = pdir / action
        script.write_text(SCRIPT)
        script.chmod(0o755)
    (pdir / "parameters.list").write_text(params)
    return pdir


def run(search_path: Sequence[str], providers: Sequence[str] | None) -> dict[str, ProviderStatus]:
    cmd = diagnose_command(search_path, providers, timeout=10)
    proc = subprocess.run(
        cmd.argv, env=cmd.env_dict, cwd=cmd.cwd, capture_output=True, text=True, check=True
    )
    assert proc.stderr == ""
    return parse_diagnose_output(proc.stdout, node="node1")


@pytest.fixture
def search_path(tmp_path: Path) -> list[str]:
    """Two search path entries whose names a shell would love to interpret."""
    first = tmp_path / "first dir $(touch PWNED) `touch PWNED2`"
    second = tmp_path / "second;dir 'q' * ?"
    first.mkdir()
    second.mkdir()

    make_provider(first, "good", params="pool The pool\n\nsize\n", optional=("open", "close"))
    make_provider(second, "good", params="other param\n")  # shadowed by the first match

    pdir = make_provider(first, "noexec")
    (pdir / "grow").chmod(0o644)

    pdir = make_provider(second, "missing")
    (pdir / "detach").unlink()

    pdir = make_provider(second, "dirfile")
    (pdir / "attach").unlink()
    (pdir / "attach").mkdir()

    pdir = make_provider(first, "noparams")
    (pdir / "parameters.list").unlink()

    make_provider(first, "badparams", params="ok fine\nna-me bad\n")
    # The last line without its newline, backslashes and inner spaces kept verbatim.
    make_provider(first, "rawlines", params="dir A path\\n  like\\\\this\nsize Size in MiB")

    pdir = make_provider(first, "badopt")
    (pdir / "open").write_text(SCRIPT)  # present but not executable

    pdir = make_provider(first, "dangling")
    (pdir / "verify").unlink()
    (pdir / "verify").symlink_to(pdir / "nowhere")

    # Not providers: a file named like one, and a directory with an invalid name.
    (first / "plainfile").write_text("x")
    make_provider(first, "bad.name")
    return [str(first), str(second), str(tmp_path / "absent")]


@pytest.mark.spawns
def test_named_providers(search_path: list[str], tmp_path: Path) -> None:
    first, second, absent = search_path
    names = ["good", "noexec", "missing", "dirfile", "noparams", "badparams", "badopt"]
    names += ["dangling", "nothere", "plainfile", "rawlines"]
    report = run(search_path, names)
    assert set(report) == set(names)

    good = report["good"]
    assert good == ProviderStatus(
        name="good",
        valid=True,
        path=f"{first}/good",
        reason=None,
        parameters={"pool": "The pool", "size": ""},
        optional=("open", "close"),
    )

    def reason(name: str) -> str | None:
        assert not report[name].valid
        return report[name].reason

    assert report["rawlines"].parameters == {
        "dir": "A path\\n  like\\\\this",
        "size": "Size in MiB",
    }
    assert reason("noexec") == "script grow is not executable"
    assert reason("missing") == "script detach is missing"
    assert report["missing"].path == f"{second}/missing"
    assert reason("dirfile") == "script attach is not a regular file"
    assert reason("noparams") == "parameters.list is missing"
    assert "parameters.list line 2: invalid parameter name 'na-me'" in str(reason("badparams"))
    assert reason("badopt") == "script open is not executable"
    assert reason("dangling") == "script verify is a dangling symbolic link"
    not_found = f"not found in {first}:{second}:{absent}"
    assert reason("nothere") == not_found
    assert report["nothere"].path is None
    assert reason("plainfile") == not_found

    # Nothing in the search path entries was run by a shell.
    assert list(tmp_path.rglob("PWNED*")) == []


@pytest.mark.spawns
def test_all_providers(search_path: list[str], tmp_path: Path) -> None:
    report = run(search_path, None)
    assert set(report) == {
        "good",
        "noexec",
        "missing",
        "dirfile",
        "noparams",
        "badparams",
        "badopt",
        "dangling",
        "rawlines",
    }
    assert report["good"].path == f"{search_path[0]}/good"
    assert report["good"].valid
    assert sorted(name for name, st in report.items() if st.valid) == ["good", "rawlines"]
    assert list(tmp_path.rglob("PWNED*")) == []


@pytest.mark.spawns
def test_several_reasons_are_joined(tmp_path: Path) -> None:
    pdir = make_provider(tmp_path, "broken")
    (pdir / "create").unlink()
    (pdir / "remove").chmod(0o600)
    (pdir / "parameters.list").unlink()
    report = run([str(tmp_path)], ["broken"])
    assert report["broken"].reason == (
        "script create is missing; script remove is not executable; parameters.list is missing"
    )


@pytest.mark.spawns
def test_empty_search_path_entries_report_nothing(tmp_path: Path) -> None:
    assert run([str(tmp_path), str(tmp_path / "nope")], None) == {}


def test_command_shape() -> None:
    cmd = diagnose_command(["/a b", "/c"], ["x", "y", "x"], 7.5, path_env="/bin")
    assert cmd.argv == (
        "/bin/sh",
        "-c",
        DIAGNOSE_SCRIPT,
        "sh",
        "named",
        "2",
        "x",
        "y",
        "/a b",
        "/c",
    )
    assert cmd.env_dict == {"PATH": "/bin", "LC_ALL": "C"}
    assert cmd.timeout == 7.5
    assert "/a b" not in DIAGNOSE_SCRIPT
    all_cmd = diagnose_command(["/a"], None, 1)
    assert all_cmd.argv[4:] == ("all", "0", "/a")


@pytest.mark.parametrize(
    ("search", "providers", "field"),
    [
        pytest.param(["/ok"], ["../etc"], "provider", id="bad-provider"),
        pytest.param(["relative"], None, "search_path", id="relative-entry"),
        pytest.param(["/a\nb"], None, "search_path", id="newline-entry"),
        pytest.param([], None, "search_path", id="empty"),
        pytest.param("/srv", None, "search_path", id="plain-string"),
    ],
)
def test_command_refuses_bad_input(
    search: Sequence[str], providers: Sequence[str] | None, field: str
) -> None:
    with pytest.raises(InputError) as info:
        diagnose_command(search, providers, 1)
    assert info.value.fields["field"] == field


@pytest.mark.parametrize(
    ("stdout", "why"),
    [
        pytest.param("", "missing header", id="empty"),
        pytest.param("sh: 1: oops\n", "missing header", id="no-header"),
        pytest.param("extjobs-diagnose 1\nprovider a\npath /x\n", "incomplete", id="truncated"),
        pytest.param("extjobs-diagnose 1\n", "incomplete", id="no-trailer"),
        pytest.param("extjobs-diagnose 1\nbogus\ndone\n", "expected a provider", id="stray"),
        pytest.param(
            "extjobs-diagnose 1\nprovider a\nwhat is this\nend\ndone\n", "unknown line", id="unk"
        ),
        pytest.param("extjobs-diagnose 1\ndone\nprovider a\n", "after the trailer", id="after"),
    ],
)
def test_parse_refuses_garbage(stdout: str, why: str) -> None:
    with pytest.raises(ProviderError, match=why) as info:
        parse_diagnose_output(stdout, node="n9")
    assert info.value.fields["node"] == "n9"


def test_param_lines_cannot_fake_records() -> None:
    stdout = (
        "extjobs-diagnose 1\nprovider a\npath /p/a\noptional\n"
        "param end\nparam provider evil\nend\ndone\n"
    )
    report = parse_diagnose_output(stdout, node="n")
    assert set(report) == {"a"}
    assert report["a"].parameters == {"end": "", "provider": "evil"}


def _ok(name: str, params: dict[str, str] | None = None) -> ProviderStatus:
    return ProviderStatus(name, True, f"/srv/{name}", None, params or {"pool": "p"}, ())


def _bad(name: str, reason: str) -> ProviderStatus:
    return ProviderStatus(name, False, None, reason, {}, ())


GROUPS = {"n1": "g1", "n2": "g1", "n3": "g2", "n4": "g2", "n5": "g3"}


def test_summarise_groups() -> None:
    per_node: dict[str, dict[str, ProviderStatus] | BaseException] = {
        "n1": {"rbd": _ok("rbd", {"pool": "P", "size": "S"}), "zfs": _ok("zfs")},
        "n2": {"rbd": _ok("rbd", {"pool": "P2"}), "zfs": _bad("zfs", "script grow is missing")},
        "n3": {"rbd": _ok("rbd")},
        "n4": NodeUnreachableError("connection refused", node="n4"),
        "n5": {"rbd": _ok("rbd")},
    }
    summary = summarise_groups(per_node, GROUPS)
    assert summary["g1"]["rbd"] == GroupProviderStatus(
        provider="rbd", group="g1", valid=True, nodes=("n1", "n2"), parameters={"pool": "P"}
    )
    assert summary["g1"]["zfs"] == GroupProviderStatus(
        provider="zfs",
        group="g1",
        valid=False,
        nodes=("n1", "n2"),
        reasons={"n2": "script grow is missing"},
        parameters={"pool": "p"},
    )
    g2 = summary["g2"]["rbd"]
    assert not g2.valid
    assert g2.reasons == {"n4": "node unreachable or diagnose failed: connection refused"}
    assert summary["g3"]["rbd"].valid


def test_summarise_groups_offline_nodes_and_missing_answers() -> None:
    per_node = {"n1": {"rbd": _ok("rbd")}, "n3": {"rbd": _ok("rbd")}, "n5": {}}
    summary = summarise_groups(per_node, GROUPS, offline={"n2"})
    assert summary["g1"]["rbd"].valid
    assert summary["g1"]["rbd"].nodes == ("n1",)
    assert summary["g2"]["rbd"].reasons == {"n4": "node did not answer"}
    assert "g3" not in summary


def test_summarise_groups_provider_missing_on_one_node() -> None:
    per_node = {"n1": {"rbd": _ok("rbd")}, "n2": {}}
    summary = summarise_groups(per_node, {"n1": "g", "n2": "g"})
    assert summary["g"]["rbd"].reasons == {"n2": "not found on this node"}
    assert not summary["g"]["rbd"].valid


@pytest.mark.spawns
def test_posix_sh_syntax() -> None:
    for shell in ("/bin/sh", "/bin/dash", "/bin/bash"):
        if os.path.exists(shell):
            subprocess.run([shell, "-n", "-c", DIAGNOSE_SCRIPT], check=True)
