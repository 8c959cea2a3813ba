"""The strict test provider: attach refused while another node holds the volume open
exclusively, unless that node re-opened it shared (what live migration relies on)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from extjobs.extstorage.names import Action
from tests.providers.conftest import make_volume
from tests.providers.harness import fails, ok, run

STRICT = Path(__file__).resolve().parents[1] / "data" / "providers" / "strict"
SHIPPED = Path(__file__).resolve().parents[2] / "providers" / "sharedfile" / "common.sh"


def install_strict(root: Path, node_id: str) -> Path:
    target = root / node_id / "strict"
    shutil.copytree(STRICT, target)
    (target / "node-id").write_text(f"{node_id}\n")
    return target


def _functions(script: str) -> set[str]:
    return set(re.findall(r"^([a-z_]+)\(\) \{$", script, re.MULTILINE))


def test_strict_extends_the_shipped_common_sh_without_copying_it() -> None:
    link = STRICT / "sharedfile-common.sh"
    assert link.is_symlink()
    assert link.resolve() == SHIPPED
    own = (STRICT / "common.sh").read_text()
    assert '. "${0%/*}/sharedfile-common.sh"' in own
    assert _functions(own) == {"attach_volume", "detach_volume", "refuse_if_attached"}
    assert not _functions(own) & _functions(SHIPPED.read_text())


@pytest.mark.spawns
def test_attach_order_of_a_live_migration(tmp_path: Path, vol_dir: Path) -> None:
    src = install_strict(tmp_path / "nodes", "src")
    dst = install_strict(tmp_path / "nodes", "dst")
    vol = make_volume("strict", vol_dir)
    ok(run(src, Action.CREATE, vol))
    ok(run(src, Action.ATTACH, vol))
    ok(run(src, Action.OPEN, vol, open_exclusive=True))
    # Ganeti's order (attach on the target first) breaks here:
    fails(run(dst, Action.ATTACH, vol), "open exclusively on node src; refusing to attach on dst")
    # Ours: the source re-opens shared before the target is touched.
    ok(run(src, Action.OPEN, vol, open_exclusive=False))
    assert ok(run(dst, Action.ATTACH, vol)).splitlines()[0] == ""
    ok(run(dst, Action.OPEN, vol, open_exclusive=False))
    attached = sorted(p.name for p in (vol_dir / f"{vol.name}.attached").iterdir())
    assert attached == ["dst", "src"]
    # Exclusive on the target is refused while the source still has it open.
    fails(run(dst, Action.OPEN, vol, open_exclusive=True), "is open (shared) on node src")
    ok(run(src, Action.CLOSE, vol))
    ok(run(src, Action.DETACH, vol))
    ok(run(dst, Action.OPEN, vol, open_exclusive=True))
    fails(run(src, Action.ATTACH, vol), "open exclusively on node dst; refusing to attach on src")
    # Remove is refused while attached anywhere.
    ok(run(dst, Action.CLOSE, vol))
    fails(run(dst, Action.REMOVE, vol), "still attached on node dst")
    ok(run(dst, Action.DETACH, vol))
    ok(run(dst, Action.DETACH, vol))  # idempotent
    ok(run(dst, Action.REMOVE, vol))
    assert [p.name for p in vol_dir.iterdir() if p.name.startswith(vol.name)] == []
