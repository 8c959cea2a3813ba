"""The daemon's configuration file (TOML), decoded into frozen attrs classes.

``load_config`` is the only place that reads the file; every section has defaults so
that an empty file is a valid configuration.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import attrs

from extjobs.errors import ConfigError, InputError
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


def _number(minimum: float, *, integer: bool = False, strict: bool = False) -> Any:
    """A validator: a finite number (an integer when ``integer``) >= ``minimum`` (>
    ``minimum`` when ``strict``); raises InputError naming the key."""

    def check(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
        kind = int if integer else (int, float)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
        if not ok:
            what = "a whole number" if integer else "a finite number"
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise InputError(f"{attr.name} must be {what} {bound}, not {value!r}", field=attr.name)

    return check


def _seconds(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    _number(0, strict=True)(_inst, attr, value)


def _timeouts(_inst: object, attr: attrs.Attribute[Any], value: dict[str, float]) -> None:
    for action, seconds in value.items():
        ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
        if not ok or not math.isfinite(seconds) or seconds <= 0:
            raise InputError(
                f"timeouts.{action} must be a finite number of seconds > 0, not {seconds!r}",
                field=f"timeouts.{action}",
            )


def _directories(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value or not all(isinstance(d, str) and d.startswith("/") for d in value):
        raise InputError(
            f"{attr.name} must be a non-empty list of absolute directories, not {value!r}",
            field=attr.name,
        )


def _boolean(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{attr.name} must be true or false, not {value!r}", field=attr.name)


def _text(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or "\0" in value:
        raise InputError(f"{attr.name} must be a non-empty string, not {value!r}", field=attr.name)


#: The ciphers the daemon may offer nodes (names as OpenSSH spells them): the AEAD and
#: counter-mode ciphers both OpenSSH and the daemon's SSH client implement.
KNOWN_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
#: Offered in this order; a node picks the first it also has. AES-GCM first: with the
#: CPU's AES instructions it costs the daemon's client about a third of ChaCha20-Poly1305's
#: CPU per packet (one AEAD call against three cipher set-ups, docs/benchmarks.md).
DEFAULT_CIPHERS = KNOWN_CIPHERS


def _ciphers(_inst: object, attr: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    unknown = [c for c in value if c not in KNOWN_CIPHERS]
    if not value or unknown or len(set(value)) != len(value):
        what = f"unknown: {', '.join(map(repr, unknown))}" if unknown else f"got {list(value)!r}"
        raise InputError(
            f"{attr.name} must be a non-empty list of distinct ciphers among "
            f"{', '.join(KNOWN_CIPHERS)} ({what})",
            field=attr.name,
        )


@attrs.frozen
class SSHOptions:
    """How the daemon talks to nodes.

    ``max_sessions`` stays below sshd's ``MaxSessions`` (10 by default): a connection
    carries at most this many channels, more connections are opened beyond that.
    """

    identity_file: str | None = None
    connect_timeout: float = attrs.field(default=10.0, validator=_seconds)
    keepalive_interval: float = attrs.field(default=5.0, validator=_seconds)
    keepalive_count_max: int = attrs.field(default=3, validator=_number(1, integer=True))
    max_sessions: int = attrs.field(default=8, validator=_number(1, integer=True))
    max_connections: int = attrs.field(default=4, validator=_number(1, integer=True))
    kill_timeout: float = attrs.field(default=5.0, validator=_seconds)
    #: Seconds ``node add`` gives its login check (``uname -n`` on the new node).
    login_timeout: float = attrs.field(default=60.0, validator=_seconds)
    ciphers: tuple[str, ...] = attrs.field(default=DEFAULT_CIPHERS, validator=_ciphers)


@attrs.frozen
class StorageOptions:
    search_path: tuple[str, ...] = attrs.field(default=DEFAULT_SEARCH_PATH, validator=_directories)
    path_env: str = attrs.field(default=DEFAULT_PATH, validator=_text)
    timeouts: dict[str, float] = attrs.field(
        validator=_timeouts,
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
            "capacity": 30.0,
        },
    )
    output_cap: int = attrs.field(default=65536, validator=_number(1024, integer=True))
    #: Seconds a group found valid for a set of providers is trusted without asking
    #: its nodes again (0: ask on every job).
    diagnose_cache: float = attrs.field(default=30.0, validator=_number(0))

    def timeout(self, action: str) -> float:
        return self.timeouts.get(action, 60.0)


@attrs.frozen
class QueueOptions:
    max_running: int = attrs.field(default=32, validator=_number(1, integer=True))
    max_queued: int = attrs.field(default=10000, validator=_number(1, integer=True))
    archive_after: float = attrs.field(default=7 * 24 * 3600.0, validator=_number(0))
    #: Archived jobs are deleted this many seconds after they ended (0: kept forever).
    purge_after: float = attrs.field(default=30 * 24 * 3600.0, validator=_number(0))
    aging_interval: float = attrs.field(default=30.0, validator=_seconds)


@attrs.frozen
class WatcherOptions:
    """The watcher inside the daemon (``docs/watcher.md``).

    Every ``interval`` seconds (0: no watcher) each online node is asked once, within
    ``probe_timeout``, which guests run there (``probes_in_flight`` nodes at a time). An
    instance that should run and does not is restarted; restarts of one instance back
    off exponentially from
    ``restart_backoff`` up to ``restart_backoff_max`` seconds, and after
    ``max_restarts`` within ``restart_window`` seconds the watcher gives up on it. A
    node that has not answered for ``node_dead_after`` seconds is fenced and its
    instances failed over, where the group (or the instance) asks for it.
    """

    interval: float = attrs.field(default=60.0, validator=_number(0))
    node_dead_after: float = attrs.field(default=60.0, validator=_number(0))
    probe_timeout: float = attrs.field(default=10.0, validator=_seconds)
    #: Nodes a round asks at once: at a thousand nodes, all at once is a burst of a
    #: thousand commands every ``interval`` that stalls whatever else runs then.
    probes_in_flight: int = attrs.field(default=64, validator=_number(1, integer=True))
    restart_backoff: float = attrs.field(default=30.0, validator=_number(0))
    restart_backoff_max: float = attrs.field(default=900.0, validator=_number(0))
    max_restarts: int = attrs.field(default=5, validator=_number(1, integer=True))
    restart_window: float = attrs.field(default=3600.0, validator=_seconds)


#: The longest path a Unix socket can be bound to (``sun_path`` less its final NUL).
MAX_SOCKET_PATH = 107

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
    lease: float = attrs.field(default=3.0, validator=_number(0.3))

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

    ``token_file`` holds one ``NAME:TOKEN ROLE`` per line (role ``read`` or ``write``;
    write includes read; ``#`` starts a comment; ``TOKEN ROLE`` without a name is still
    read, see :func:`extjobs.api.auth.load_tokens`).
    """

    listen: str
    tls_cert: Path
    tls_key: Path
    token_file: Path

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _listen(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{attr.name} must be HOST:PORT, not {value!r}", field=attr.name)


def _path(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise InputError(f"{attr.name} must be an absolute path, not {value!r}", field=attr.name)


@attrs.frozen
class RapiOptions:
    """The optional Ganeti-compatible remote API (docs/rapi.md): HTTPS with Basic
    authentication against ``users_file`` (Ganeti's format, re-read on SIGHUP).

    ``wait_timeout``: seconds ``GET /2/jobs/ID/wait`` waits for a change before it
    answers ``null`` (Ganeti's clients then ask again).
    """

    listen: str = attrs.field(validator=_listen)
    tls_cert: str = attrs.field(validator=_path)
    tls_key: str = attrs.field(validator=_path)
    users_file: str = attrs.field(validator=_path)
    wait_timeout: float = attrs.field(default=10.0, validator=_number(0, strict=True))
    #: False: reads need no user (Ganeti's default); changes and ``/wait`` always do.
    require_authentication: bool = attrs.field(default=True, validator=_boolean)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _loopback(_inst: object, attr: attrs.Attribute[Any], value: Any) -> None:
    _listen(_inst, attr, value)
    host = value.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InputError(
            f"{attr.name} {value!r} serves plain HTTP: only a loopback address "
            "(127.0.0.1, [::1], localhost); elsewhere the dashboard is on the TLS "
            "listener (tcp_listen) under /ui/",
            field=attr.name,
        )


@attrs.frozen
class DashboardOptions:
    """``[dashboard]``: a plain-HTTP listener serving only the dashboard, on a loopback
    address (a laptop demo). It asks for a token from the daemon's token file when
    there is one, and shows everything to anyone who can connect otherwise. With TLS
    and tokens (``tcp_listen``) the dashboard is served there anyway, under ``/ui/``."""

    listen: str = attrs.field(validator=_loopback)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@attrs.frozen
class MetricsOptions:
    """``GET /metrics`` (docs/monitoring.md): always on the API's listeners (the Unix
    socket, and the TCP listener with its token); with ``listen``, also on that plain-HTTP
    ``HOST:PORT`` with no authentication, for a local Prometheus."""

    listen: str | None = attrs.field(default=None, validator=attrs.validators.optional(_listen))

    @property
    def host_port(self) -> tuple[str, int]:
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@attrs.frozen
class MigrationOptions:
    """Defaults of a live migration's settings (``instance migrate`` and ``node
    migrate`` override them per job): the longest pause of the guest at the switch-over
    in milliseconds, the bandwidth in MiB/s (kvm: QMP ``migrate-set-parameters``), and
    how long the memory transfer may run before it is cancelled (the guest stays on the
    source)."""

    max_downtime: int = attrs.field(default=300, validator=_number(1, integer=True))
    bandwidth: int = attrs.field(default=1024, validator=_number(1, integer=True))
    converge_timeout: float = attrs.field(default=900.0, validator=_seconds)


@attrs.frozen
class Config:
    state_dir: Path = Path("/var/lib/extjobs")
    socket: Path | None = None
    tcp: TcpOptions | None = None
    #: The Ganeti-compatible remote API; off unless the file has a [rapi] section.
    rapi: RapiOptions | None = None
    ssh: SSHOptions = SSHOptions()
    storage: StorageOptions = StorageOptions()
    queue: QueueOptions = QueueOptions()
    store: StoreOptions = StoreOptions()
    metrics: MetricsOptions = MetricsOptions()
    migration: MigrationOptions = MigrationOptions()
    #: The plain-HTTP loopback dashboard; off unless the file has a [dashboard] section.
    dashboard: DashboardOptions | None = None
    watcher: WatcherOptions = WatcherOptions()

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
    from extjobs.model import codec

    numbers = {a.name for a in attrs.fields(cls) if a.type in (int, float, "int", "float")}
    for key in sorted(numbers & set(values)):
        if isinstance(values[key], bool):
            # TOML's true would pass as the number 1.
            raise ConfigError(
                f"invalid [{section}]: {key} must be a number, not {values[key]!r}",
                section=section,
            )

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
    store = _build(StoreOptions, _section(data, "store"), "store")
    check_store_url(store.url)
    migration = _build(MigrationOptions, _section(data, "migration"), "migration")
    watcher = _build(WatcherOptions, _section(data, "watcher"), "watcher")
    known_sections = {"daemon", "ssh", "storage", "queue", "store", "rapi", "metrics"}
    known_sections |= {"migration", "dashboard", "watcher"}
    unknown = sorted(set(data) - known_sections)
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}", section=unknown[0])
    if "ciphers" in ssh and not isinstance(ssh["ciphers"], list):
        raise ConfigError(
            f"[ssh] ciphers must be a list of cipher names, not {ssh['ciphers']!r}", section="ssh"
        )
    if "search_path" in storage:
        if not isinstance(storage["search_path"], list):
            raise ConfigError(
                "[storage] search_path must be a list of directories, "
                f"not {storage['search_path']!r}",
                section="storage",
            )
        storage["search_path"] = tuple(storage["search_path"])
    if "timeouts" in storage:
        bad = sorted(set(storage["timeouts"]) - set(ACTIONS) - {"diagnose", "install", "capacity"})
        if bad:
            raise ConfigError(f"unknown action(s) in [storage.timeouts]: {', '.join(bad)}")
        storage["timeouts"] = {**StorageOptions().timeouts, **storage["timeouts"]}
    for key in ("state_dir", "socket"):
        if key in daemon and (not isinstance(daemon[key], str) or not daemon[key]):
            raise ConfigError(
                f"[daemon] {key} must be a path (a string), not {daemon[key]!r}", section="daemon"
            )
    sd = state_dir or Path(daemon.get("state_dir", "/var/lib/extjobs"))
    sock = daemon.get("socket")
    socket_path = Path(sock) if sock else Path(sd) / "api.sock"
    if len(os.fsencode(str(socket_path))) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"[daemon] socket path {socket_path} is {len(os.fsencode(str(socket_path)))} bytes; "
            f"a Unix socket path holds at most {MAX_SOCKET_PATH}: choose a shorter socket "
            "(or state_dir)",
            section="daemon",
        )
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
    rapi = None
    if "rapi" in data:
        section = _section(data, "rapi")
        missing = sorted({"listen", "tls_cert", "tls_key", "users_file"} - set(section))
        if missing:
            raise ConfigError(
                "[rapi] is served only over TLS to known users; missing: " + ", ".join(missing),
                section="rapi",
            )
        rapi = _build(RapiOptions, section, "rapi")
    dashboard = None
    if "dashboard" in data:
        dashboard = _build(DashboardOptions, _section(data, "dashboard"), "dashboard")
    return Config(
        state_dir=Path(sd),
        socket=Path(sock) if sock else None,
        tcp=tcp,
        rapi=rapi,
        dashboard=dashboard,
        ssh=_build(SSHOptions, ssh, "ssh"),
        storage=_build(StorageOptions, storage, "storage"),
        queue=_build(QueueOptions, queue, "queue"),
        store=store,
        metrics=_build(MetricsOptions, _section(data, "metrics"), "metrics"),
        migration=migration,
        watcher=watcher,
    )


def load_config(path: Path | None, *, state_dir: Path | None = None) -> Config:
    """Read the TOML file at ``path`` (``None``: defaults only)."""
    if path is None:
        return config_from_dict({}, state_dir=state_dir)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}", path=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start})", path=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}", path=str(path)
        ) from exc
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
