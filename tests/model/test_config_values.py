"""Configuration values are checked for type and range at start, naming the key; no
malformed file ends in a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from extjobs.errors import ConfigError
from extjobs.model.config import load_config


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("[queue]\nmax_running = 0\n", "max_running", id="max-running-0"),
        pytest.param("[queue]\nmax_running = -1\n", "max_running", id="max-running-negative"),
        pytest.param("[queue]\nmax_running = true\n", "max_running", id="max-running-bool"),
        pytest.param("[queue]\naging_interval = nan\n", "aging_interval", id="aging-nan"),
        pytest.param("[queue]\npurge_after = -5\n", "purge_after", id="purge-negative"),
        pytest.param("[storage]\noutput_cap = -1\n", "output_cap", id="output-cap-negative"),
        pytest.param('[storage]\nsearch_path = "/srv/x"\n', "search_path", id="search-path-string"),
        pytest.param(
            '[storage]\nsearch_path = ["rel"]\n', "search_path", id="search-path-relative"
        ),
        pytest.param("[storage.timeouts]\ncreate = inf\n", "timeouts.create", id="timeout-inf"),
        pytest.param("[storage.timeouts]\nattach = -1\n", "timeouts.attach", id="timeout-negative"),
        pytest.param("[ssh]\nconnect_timeout = 0\n", "connect_timeout", id="connect-timeout-0"),
        pytest.param("[ssh]\nmax_sessions = 0\n", "max_sessions", id="max-sessions-0"),
        pytest.param('[ssh]\nciphers = ["aes128-cbc"]\n', "'aes128-cbc'", id="cipher-unknown"),
        pytest.param("[ssh]\nciphers = []\n", "ciphers", id="ciphers-empty"),
        pytest.param('[ssh]\nciphers = "aes256-ctr"\n', "ciphers", id="ciphers-string"),
        pytest.param(
            '[ssh]\nciphers = ["aes256-ctr", "aes256-ctr"]\n', "distinct", id="ciphers-twice"
        ),
        pytest.param("[watcher]\nprobes_in_flight = 0\n", "probes_in_flight", id="probes-0"),
        pytest.param("[store]\nlease = 0\n", "lease", id="lease-0"),
        pytest.param("[daemon]\nstate_dir = 5\n", "state_dir", id="state-dir-number"),
        pytest.param(
            f'[daemon]\nsocket = "/tmp/{"s" * 120}.sock"\n', "socket path", id="socket-too-long"
        ),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "extjobs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert named in caught.value.message


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "extjobs.toml"
    path.write_bytes(b'[daemon]\nstate_dir = "/srv/\xff"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(path)


def test_the_example_configuration_and_the_defaults_are_accepted() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "extjobs.example.toml"
    assert load_config(example).queue.max_running >= 1
    assert load_config(None).storage.output_cap > 0
    assert load_config(example).ssh.ciphers == load_config(None).ssh.ciphers


def test_every_cipher_that_may_be_configured_is_one_the_ssh_client_has() -> None:
    import asyncssh

    from extjobs.model.config import KNOWN_CIPHERS

    assert set(KNOWN_CIPHERS) <= {a.decode() for a in asyncssh.encryption.get_encryption_algs()}
