"""A failure injected at each step of ``instance add`` undoes everything that was made.

Each case installs a copy of a shipped provider (``flaky``) in which one script fails,
often *after* doing its work (as providers that lie about their exit status do), and
adds an instance whose disk 0 is fine and whose disk 1 uses ``flaky``. Afterwards: the
job failed and its log says what was undone, the configuration does not know the
instance, no volume file is left and no loop device maps one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instances.conftest import (
    KINDS,
    Cluster,
    leftovers,
    loop_devices_of,
    loop_devices_usable,
    open_cluster,
)

pytestmark = pytest.mark.spawns

FAIL = "echo 'injected {step} failure' >&2; exit 1\n"
AFTER = '"${{0%/*}}/{step}.real" >/dev/null || exit 1\n' + FAIL

CASES = [
    # id, source provider, replaced scripts, expected message, expected undo lines
    pytest.param(
        "sharedfile",
        {"verify": FAIL.format(step="verify")},
        "injected verify failure",
        ["removed disk0"],
        id="verify",
    ),
    pytest.param(
        "sharedfile",
        {"create": AFTER.format(step="create")},
        "injected create failure",
        ["removed disk1", "removed disk0"],
        id="create-after-creating",
    ),
    pytest.param(
        "loopfile",
        {"attach": AFTER.format(step="attach")},
        "injected attach failure",
        ["detached disk1", "removed disk1"],
        id="attach-after-attaching",
    ),
    pytest.param(
        "loopfile",
        {"attach": '"${0%/*}/attach.real" >/dev/null && echo /tmp\n'},
        "printed '/tmp', which is not a block device",
        ["detached disk1", "removed disk1", "removed disk0"],
        id="attach-lies-about-the-device",
    ),
    pytest.param(
        "sharedfile",
        {"attach": "echo hello\n"},
        "not an absolute device path",
        ["detached disk1"],
        id="attach-garbage",
    ),
    pytest.param(
        "sharedfile",
        {"open": AFTER.format(step="open")},
        "injected open failure",
        ["closed disk1", "detached disk1", "removed disk1"],
        id="open",
    ),
    pytest.param(
        "sharedfile",
        {"setinfo": FAIL.format(step="setinfo")},
        "injected setinfo failure",
        ["closed disk1", "removed disk1", "closed disk0"],
        id="setinfo",
    ),
    pytest.param(
        "sharedfile",
        {"attach": '"${0%/*}/attach.real" >/dev/null && printf "\\nfake:/nonexistent\\n"\n'},
        "disk /nonexistent does not exist on this node",
        ["stopped fake guest", "closed disk1", "removed disk0"],
        id="hypervisor-start",
    ),
]


@pytest.fixture(scope="module", params=KINDS)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    providers = ("sharedfile", "loopfile") if loop_devices_usable() else ("sharedfile",)
    base = tmp_path_factory.mktemp(f"fail-{request.param}")
    with open_cluster(request.param, base, providers=providers) as c:
        yield c


@pytest.mark.parametrize(("source", "scripts", "message", "undone"), CASES)
def test_failed_add_leaves_nothing_behind(
    cluster: Cluster, source: str, scripts: dict[str, str], message: str, undone: list[str]
) -> None:
    if source == "loopfile" and not loop_devices_usable():
        pytest.skip("loopfile needs root and losetup")
    vols = cluster.vol_dir("fail")
    cluster.install_copy("flaky", source, scripts)
    name = f"f{len(list(vols.parent.iterdir()))}"
    cluster.fails(
        "instance",
        "add",
        name,
        "-n",
        "node1",
        "--disk",
        f"0:size=4M,provider=sharedfile,dir={vols}",
        "--disk",
        f"1:size=4M,provider=flaky,dir={vols}",
        message=message,
    )
    job = cluster.last_job()
    assert job["status"] == "error"
    log = cluster.log_text(job)
    for line in undone:
        assert f"undone: {line}" in log, log
    assert "the configuration was not changed" in log
    assert name not in cluster.instance_names()
    assert leftovers(vols) == []
    assert loop_devices_of(vols) == []
    assert not list(cluster.run_dir.rglob("*.pid"))
