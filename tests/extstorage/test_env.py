from typing import Any

import attrs
import pytest

from extjobs.errors import InputError
from extjobs.extstorage.env import Volume, build_command, volume_name
from extjobs.extstorage.names import Action

UUID = "6f1e2d3c-0000-4a4a-8b8b-123456789abc"
NAME = f"{UUID}.ext.disk0"
PDIR = "/srv/extjobs/extstorage/rbd"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NASTY = "$(touch /tmp/pwned) `id` 'q' \"dq\" ;|&\n  two lines"

VOLUME = Volume(
    name=NAME,
    uuid=UUID,
    size=1024,
    provider="rbd",
    params={"pool": "fast", "Weird_Case": NASTY},
    access="userspace",
    cname="data",
    metadata="originstname+web 1.example.com",
    new_size=2048,
    open_exclusive=False,
    snapshot_name="snap-1",
    snapshot_size=512,
)

COMMON = {
    "PATH": PATH,
    "LC_ALL": "C",
    "VOL_NAME": NAME,
    "VOL_UUID": UUID,
    "VOL_CNAME": "data",
    "EXTP_POOL": "fast",
    "EXTP_WEIRD_CASE": NASTY,
    "EXTP_PROVIDER": "rbd",
    "EXTP_ACCESS": "userspace",
}

# The whole environment of every action: nothing more, nothing less.
TABLE: list[Any] = [
    pytest.param(Action.CREATE, {**COMMON, "VOL_SIZE": "1024"}, id="create"),
    pytest.param(Action.REMOVE, COMMON, id="remove"),
    pytest.param(Action.GROW, {**COMMON, "VOL_SIZE": "1024", "VOL_NEW_SIZE": "2048"}, id="grow"),
    pytest.param(Action.ATTACH, COMMON, id="attach"),
    pytest.param(Action.DETACH, COMMON, id="detach"),
    pytest.param(
        Action.SETINFO,
        {**COMMON, "VOL_METADATA": "originstname+web_1.example.com"},
        id="setinfo",
    ),
    pytest.param(Action.VERIFY, COMMON, id="verify"),
    pytest.param(
        Action.SNAPSHOT,
        {**COMMON, "VOL_SNAPSHOT_NAME": "snap-1", "VOL_SNAPSHOT_SIZE": "512"},
        id="snapshot",
    ),
    pytest.param(Action.OPEN, {**COMMON, "VOL_OPEN_EXCLUSIVE": "False"}, id="open"),
    pytest.param(Action.CLOSE, COMMON, id="close"),
]


@pytest.mark.parametrize(("action", "expected"), TABLE)
def test_environment_of_every_action(action: Action, expected: dict[str, str]) -> None:
    cmd = build_command(PDIR, action, VOLUME, path_env=PATH, timeout=12.5)
    assert cmd.env_dict == expected
    assert cmd.argv == (f"{PDIR}/{action.value}",)
    assert cmd.cwd == PDIR
    assert cmd.timeout == 12.5
    assert cmd.stdin == b""


def test_table_covers_every_action() -> None:
    assert {p.values[0] for p in TABLE} == set(Action)


MINIMAL = Volume(name=NAME, uuid=UUID, size=10, provider="rbd")
MIN_COMMON = {
    "PATH": "/bin",
    "LC_ALL": "C",
    "VOL_NAME": NAME,
    "VOL_UUID": UUID,
    "EXTP_PROVIDER": "rbd",
    "EXTP_ACCESS": "kernelspace",
}


@pytest.mark.parametrize(
    ("action", "volume", "extra"),
    [
        pytest.param(Action.ATTACH, MINIMAL, {}, id="no-cname-no-params"),
        pytest.param(Action.OPEN, MINIMAL, {"VOL_OPEN_EXCLUSIVE": "True"}, id="open-default"),
        pytest.param(
            Action.OPEN,
            attrs.evolve(MINIMAL, open_exclusive=True),
            {"VOL_OPEN_EXCLUSIVE": "True"},
            id="open-exclusive",
        ),
        pytest.param(
            Action.SNAPSHOT,
            MINIMAL,
            {"VOL_SNAPSHOT_NAME": f"{NAME}.snap", "VOL_SNAPSHOT_SIZE": "10"},
            id="snapshot-defaults",
        ),
        pytest.param(
            Action.SETINFO,
            attrs.evolve(MINIMAL, metadata="-x" + "y" * 300),
            {"VOL_METADATA": "_x" + "y" * 126},
            id="setinfo-sanitised",
        ),
    ],
)
def test_defaults(action: Action, volume: Volume, extra: dict[str, str]) -> None:
    cmd = build_command("/bin/../x/rbd/", action, volume, path_env="/bin", timeout=1)
    assert cmd.env_dict == {**MIN_COMMON, **extra}
    assert cmd.argv == (f"/bin/../x/rbd/{action.value}",)
    assert cmd.cwd == "/bin/../x/rbd"


def test_action_given_as_string() -> None:
    cmd = build_command(PDIR, "attach", MINIMAL, path_env="/bin", timeout=1)  # type: ignore[arg-type]
    assert cmd.argv == (f"{PDIR}/attach",)


def test_volume_name() -> None:
    assert volume_name(UUID, 3) == f"{UUID}.ext.disk3"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"name": "disk0"}, "name", id="name-format"),
        pytest.param({"name": "../x.ext.disk0"}, "name", id="name-traversal"),
        pytest.param({"uuid": ""}, "uuid", id="uuid-empty"),
        pytest.param({"uuid": "a b"}, "uuid", id="uuid-space"),
        pytest.param({"size": 0}, "size", id="size-zero"),
        pytest.param({"size": True}, "size", id="size-bool"),
        pytest.param({"provider": "../rbd"}, "provider", id="provider"),
        pytest.param({"access": "both"}, "access", id="access"),
        pytest.param({"params": {"a-b": "x"}}, "params", id="param-name"),
        pytest.param({"params": {"provider": "x"}}, "params", id="param-provider-reserved"),
        pytest.param({"params": {"ACCESS": "x"}}, "params", id="param-access-reserved"),
        pytest.param({"params": {"pool": "x", "POOL": "y"}}, "params", id="param-collision"),
        pytest.param({"params": {"pool": "a\0b"}}, "params.pool", id="param-nul"),
        pytest.param({"cname": "a\0"}, "cname", id="cname-nul"),
        pytest.param({"new_size": -1}, "new_size", id="new-size"),
    ],
)
def test_volume_validation(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as info:
        attrs.evolve(MINIMAL, **changes)
    assert info.value.fields["field"] == field


def test_params_are_copied() -> None:
    params = {"pool": "a"}
    volume = attrs.evolve(MINIMAL, params=params)
    params["pool"] = "b"
    assert volume.params == {"pool": "a"}


@pytest.mark.parametrize(
    ("action", "volume", "field"),
    [
        pytest.param(Action.GROW, MINIMAL, "new_size", id="grow-without-new-size"),
        pytest.param(Action.GROW, attrs.evolve(MINIMAL, new_size=10), "new_size", id="no-op"),
        pytest.param(Action.GROW, attrs.evolve(MINIMAL, new_size=5), "new_size", id="shrink"),
        pytest.param(Action.SETINFO, MINIMAL, "metadata", id="setinfo-without-metadata"),
    ],
)
def test_missing_action_fields(action: Action, volume: Volume, field: str) -> None:
    with pytest.raises(InputError) as info:
        build_command(PDIR, action, volume, path_env="/bin", timeout=1)
    assert info.value.fields["field"] == field


@pytest.mark.parametrize(
    ("provider_dir", "path_env", "field"),
    [
        pytest.param("rbd", "/bin", "provider_dir", id="relative"),
        pytest.param("/srv/other", "/bin", "provider_dir", id="wrong-name"),
        pytest.param("/", "/bin", "provider_dir", id="root"),
        pytest.param("/srv/x\n/rbd", "/bin", "provider_dir", id="newline"),
        pytest.param(PDIR, "", "path", id="empty-path"),
    ],
)
def test_bad_directory_or_path(provider_dir: str, path_env: str, field: str) -> None:
    with pytest.raises(InputError) as info:
        build_command(provider_dir, Action.ATTACH, MINIMAL, path_env=path_env, timeout=1)
    assert info.value.fields["field"] == field
