"""The daemon's configuration file (TOML), decoded into frozen attrs classes.

``load_config`` is the only place that reads the file; every section has defaults so
that an empty file is a valid configuration.
"""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import attrs

from extjobs.errors import ConfigError
from extjobs.model.remote import DEFAULT_PATH

DEFAULT_SEARCH_PATH = (
    "/srv/extjobs/extstorage",
    "/srv/ganeti/extstorage",
    "/usr/local/lib/ganeti/extstorage",
    "/usr/lib/ganeti/extstorage",
    "/usr/share/ganeti/extstorage",
)

ACTIONS = (
    "create",
    "remove",
    "grow",
    "attach",
    "detach",
    "setinfo",
    "verify",
    "snapshot",
    "open",
    "close",
)


@attrs.frozen
class SSHOptions:
    """How the daemon talks to nodes.

    ``max_sessions`` stays below sshd's ``MaxSessions`` (10 by default): a connection
    carries at most this many channels, more connections are opened beyond that.
    """

    identity_file: str | None = None
    connect_timeout: float = 10.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3
    max_sessions: int = 8
    max_connections: int = 4
    kill_timeout: float = 5.0


@attrs.frozen
class StorageOptions:
    search_path: tuple[str, ...] = DEFAULT_SEARCH_PATH
    path_env: str = DEFAULT_PATH
    timeouts: dict[str, float] = attrs.field(
        factory=lambda: {
            "create": 300.0,
            "remove": 300.0,
            "grow": 300.0,
            "attach": 60.0,
            "detach": 60.0,
            "install": 300.0,
            "setinfo": 60.0,
            "verify": 60.0,
            "snapshot": 600.0,
            "open": 60.0,
            "close": 60.0,
            "diagnose": 30.0,
        }
    )
    output_cap: int = 65536
    #: Seconds a group found valid for a set of providers is trusted without asking
    #: its nodes again (0: ask on every job).
    diagnose_cache: float = 30.0

    def timeout(self, action: str) -> float:
        return self.timeouts.get(action, 60.0)


@attrs.frozen
class QueueOptions:
    max_running: int = 32
    max_queued: int = 10000
    archive_after: float = 7 * 24 * 3600.0
    #: Archived jobs are deleted this many seconds after they ended (0: kept forever).
    purge_after: float = 30 * 24 * 3600.0
    aging_interval: float = 30.0


#: URL schemes of ``[store] url`` that name a PostgreSQL database.
POSTGRES_SCHEMES = ("postgresql", "postgres")


@attrs.frozen
class StoreOptions:
    """Where the daemon keeps its state.

    ``url`` empty (the default): SQLite in the state directory, for one master.
    ``postgresql://user:password@host:port/dbname?…`` (libpq's URI syntax, its query
    parameters included): a PostgreSQL database that several masters may share.
    """

    url: str = ""
    #: With a shared store: this master's name among the masters (default: host name).
    master_name: str = ""
    #: With a shared store: seconds of the leader's lease; the leader renews it every
    #: third of that and stops acting a third before it could expire.
    lease: float = 3.0

    @property
    def is_postgres(self) -> bool:
        return bool(self.url)

    @property
    def shown_url(self) -> str:
        """``url`` with its password (if any) replaced by ``***``: safe to log and show."""
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def check_store_url(url: str) -> None:
    """Raise :class:`ConfigError` naming ``store.url`` unless ``url`` is empty or a
    well-formed PostgreSQL URL (whether the database answers is checked at open)."""
    if not url:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"store.url {redact_url(url)!r} is not a valid URL: {exc}", setting="store.url"
        ) from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"store.url must be empty (SQLite in the state directory) or start with "
            f"postgresql://, not {redact_url(url)!r}",
            setting="store.url",
        )
    if port == 0:
        raise ConfigError(f"store.url {redact_url(url)!r} has port 0", setting="store.url")


@attrs.frozen
class TcpOptions:
    """The optional TCP listener: only with TLS and bearer tokens.

    ``token_file`` holds one ``TOKEN ROLE`` per line (role ``read`` or ``write``; write
    includes read; ``#`` starts a comment).
    """

    listen: str
    tls_cert: Path
    tls_key: Path
    token_file: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@attrs.frozen
class Config:
    state_dir: Path = Path("/var/lib/extjobs")
    socket: Path | None = None
    tcp: TcpOptions | None = None
    ssh: SSHOptions = SSHOptions()
    storage: StorageOptions = StorageOptions()
    queue: QueueOptions = QueueOptions()
    store: StoreOptions = StoreOptions()

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else self.state_dir / "api.sock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "extjobs.db"


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table", section=name)
    return value


def _build(cls: type[Any], values: dict[str, Any], section: str) -> Any:
    known = {a.name for a in attrs.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in [{section}]: {', '.join(unknown)}; allowed: {', '.join(sorted(known))}",
            section=section,
        )
    from extjobs.errors import InputError
    from extjobs.model import codec

    try:
        return codec.structure(values, cls, what=section)
    except InputError as exc:
        raise ConfigError(f"invalid [{section}]: {exc.message}", section=section) from None


def config_from_dict(data: dict[str, Any], *, state_dir: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML; raises :class:`ConfigError`."""
    daemon = _section(data, "daemon")
    ssh = _section(data, "ssh")
    storage = dict(_section(data, "storage"))
    queue = _section(data, "queue")
    purge_after = queue.get("purge_after", 0)
    if not isinstance(purge_after, int | float) or not purge_after >= 0:
        raise ConfigError(
            "[queue] purge_after must be a number of seconds >= 0 (0: never purge), "
            f"not {purge_after!r}",
            section="queue",
        )
    store = _build(StoreOptions, _section(data, "store"), "store")
    check_store_url(store.url)
    unknown = sorted(set(data) - {"daemon", "ssh", "storage", "queue", "store"})
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}", section=unknown[0])
    if "search_path" in storage:
        storage["search_path"] = tuple(storage["search_path"])
    if "timeouts" in storage:
        bad = sorted(set(storage["timeouts"]) - set(ACTIONS) - {"diagnose"})
        if bad:
            raise ConfigError(f"unknown action(s) in [storage.timeouts]: {', '.join(bad)}")
        storage["timeouts"] = {**StorageOptions().timeouts, **storage["timeouts"]}
    sd = state_dir or Path(daemon.get("state_dir", "/var/lib/extjobs"))
    sock = daemon.get("socket")
    tcp_keys = {"tcp_listen", "tls_cert", "tls_key", "token_file"}
    unknown_daemon = sorted(set(daemon) - {"state_dir", "socket"} - tcp_keys)
    if unknown_daemon:
        raise ConfigError(f"unknown key(s) in [daemon]: {', '.join(unknown_daemon)}")
    tcp = None
    if "tcp_listen" in daemon:
        missing = sorted(k for k in tcp_keys if not daemon.get(k))
        if missing:
            raise ConfigError(
                "[daemon] tcp_listen needs TLS and tokens; missing: " + ", ".join(missing),
                section="daemon",
            )
        listen = str(daemon["tcp_listen"])
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"[daemon] tcp_listen must be HOST:PORT, not {listen!r}")
        tcp = TcpOptions(
            listen=listen,
            tls_cert=Path(daemon["tls_cert"]),
            tls_key=Path(daemon["tls_key"]),
            token_file=Path(daemon["token_file"]),
        )
    return Config(
        state_dir=Path(sd),
        socket=Path(sock) if sock else None,
        tcp=tcp,
        ssh=_build(SSHOptions, ssh, "ssh"),
        storage=_build(StorageOptions, storage, "storage"),
        queue=_build(QueueOptions, queue, "queue"),
        store=store,
    )


def load_config(path: Path | None, *, state_dir: Path | None = None) -> Config:
    """Read the TOML file at ``path`` (``None``: defaults only)."""
    if path is None:
        return config_from_dict({}, state_dir=state_dir)
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}", path=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", path=str(path)) from exc
    return config_from_dict(data, state_dir=state_dir)


def default_socket() -> Path | None:
    """The socket the CLI talks to when neither ``--socket`` nor ``EXTJOBS_SOCKET`` is set."""
    env = os.environ.get("EXTJOBS_SOCKET")
    if env:
        return Path(env)
    cfg = os.environ.get("EXTJOBS_CONFIG", "/etc/extjobs/extjobs.toml")
    if Path(cfg).exists():
        return load_config(Path(cfg)).socket_path
    return Path("/var/lib/extjobs/api.sock")
