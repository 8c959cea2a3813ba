"""The watcher's pure parts: observed states, restart backoff, its settings and opcodes,
and the parsing of the nodes' guest listing."""

from __future__ import annotations

import pytest

from extjobs.errors import ConfigError, HypervisorError, InputError
from extjobs.hypervisors.base import parse_guests
from extjobs.model.config import config_from_dict
from extjobs.model.opcodes import (
    OpInstanceSetAutoRepair,
    OpWatcherSetPause,
    decode_opcode,
)
from extjobs.model.watcher import ObservedState, RestartHistory, RestartPolicy, classify

S = ObservedState


@pytest.mark.parametrize(
    ("admin_up", "offline", "answered", "running_on", "expected"),
    [
        pytest.param(True, False, True, ["node1"], S.RUNNING, id="up-running"),
        pytest.param(True, False, True, [], S.ERROR_DOWN, id="up-not-running"),
        pytest.param(False, False, True, [], S.STOPPED, id="down-stopped"),
        pytest.param(False, False, True, ["node1"], S.ERROR_UP, id="down-running"),
        pytest.param(True, False, True, ["node2"], S.ERROR_WRONGNODE, id="elsewhere"),
        pytest.param(True, False, False, ["node2"], S.ERROR_WRONGNODE, id="elsewhere-unknown"),
        pytest.param(True, True, False, [], S.ERROR_NODEOFFLINE, id="offline"),
        pytest.param(False, True, False, [], S.ERROR_NODEOFFLINE, id="offline-down"),
        pytest.param(True, False, False, [], S.UNKNOWN, id="unreachable"),
    ],
)
def test_classify(
    admin_up: bool, offline: bool, answered: bool, running_on: list[str], expected: S
) -> None:
    got = classify(
        admin_up=admin_up,
        primary="node1",
        primary_offline=offline,
        primary_answered=answered,
        running_on=running_on,
    )
    assert got is expected


POLICY = RestartPolicy(base=10.0, cap=25.0, limit=4, window=100.0)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [POLICY.delay(n) for n in (1, 2, 3, 4)] == [10.0, 20.0, 25.0, 25.0]


def test_restart_history_backs_off_gives_up_and_forgets_old_restarts() -> None:
    h = RestartHistory()
    assert h.decide(0.0, POLICY) == ("restart", None)
    h.restarted(0.0)
    assert h.decide(5.0, POLICY) == ("wait", 10.0)
    assert h.decide(10.0, POLICY) == ("restart", None)
    h.restarted(10.0)
    assert h.decide(20.0, POLICY) == ("wait", 30.0)
    h.restarted(30.0)
    h.restarted(55.0)
    assert h.decide(80.0, POLICY) == ("give-up", None)
    # Outside the window the old restarts no longer count.
    assert h.decide(101.0, POLICY) == ("restart", None)
    assert h.attempts == [10.0, 30.0, 55.0]
    h.gave_up = "gave up"
    assert h.decide(500.0, POLICY) == ("gave-up", None)


def test_watcher_settings_and_their_errors() -> None:
    config = config_from_dict({"watcher": {"interval": 0.5, "max_restarts": 2}})
    assert config.watcher.interval == 0.5
    assert config.watcher.max_restarts == 2
    assert config.watcher.node_dead_after == 60.0
    assert config_from_dict({}).watcher.interval == 60.0
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"watcher": {"intreval": 1}})
    with pytest.raises(ConfigError, match="interval"):
        config_from_dict({"watcher": {"interval": -1}})
    with pytest.raises(ConfigError, match="max_restarts"):
        config_from_dict({"watcher": {"max_restarts": 0}})
    with pytest.raises(ConfigError, match="probe_timeout"):
        config_from_dict({"watcher": {"probe_timeout": True}})


def test_auto_repair_and_pause_opcodes_check_their_input() -> None:
    op = decode_opcode(
        {"OP_ID": "OP_INSTANCE_SET_AUTO_REPAIR", "instance_name": "a", "auto_failover": "group"}
    )
    assert isinstance(op, OpInstanceSetAutoRepair)
    with pytest.raises(InputError, match="auto_failover must be one of yes, no, group"):
        OpInstanceSetAutoRepair(instance_name="a", auto_failover="maybe")
    with pytest.raises(InputError, match="nothing to change"):
        OpInstanceSetAutoRepair(instance_name="a")
    assert OpWatcherSetPause(paused=True, duration=60).duration == 60
    with pytest.raises(InputError, match="duration"):
        OpWatcherSetPause(paused=True, duration=0)
    with pytest.raises(InputError, match="only goes with paused"):
        OpWatcherSetPause(paused=False, duration=60)


def test_guest_listing_is_parsed_or_refused() -> None:
    assert parse_guests("guests\n", node="n") == {}
    text = "guests /run/x/n\nrunning abc-1 42\nrunning def 7\n"
    assert parse_guests(text, node="n") == {"abc-1": 42, "def": 7}
    with pytest.raises(HypervisorError, match="guest listing on node 'n'"):
        parse_guests("stopped\n", node="n")
    with pytest.raises(HypervisorError, match="guest listing on node 'n'"):
        parse_guests("guests /d\nrunning abc x\n", node="n")


def test_the_example_configuration_lists_the_watcher_defaults() -> None:
    from pathlib import Path

    from extjobs.model.config import WatcherOptions, load_config

    example = Path(__file__).resolve().parents[2] / "config" / "extjobs.example.toml"
    assert load_config(example).watcher == WatcherOptions()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
    ],
)
def test_pause_durations(text: str, seconds: float) -> None:
    from extjobs.cli.watcher import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "0", "1w", "1 hour"])
def test_bad_pause_durations_are_refused(text: str) -> None:
    import click

    from extjobs.cli.watcher import parse_duration

    with pytest.raises(click.BadParameter, match="no duration"):
        parse_duration(text)
