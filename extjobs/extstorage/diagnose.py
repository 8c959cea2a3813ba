"""Finding and checking providers on a node in one run, and summing up per node group.

Theory of operation: :func:`diagnose_command` builds a single ``/bin/sh -c SCRIPT``
run. The script is a constant; the search path and the provider names travel as
positional arguments, so no path or name is ever spliced into shell text. For each
provider it looks along the search path (the first directory where ``<dir>/<name>`` is a
directory wins, as Ganeti's ``FindFile``), checks the files Ganeti checks, and prints a
record. :func:`parse_diagnose_output` turns the records into :class:`ProviderStatus`
values, and :func:`summarise_groups` combines several nodes into a verdict per node
group (DESIGN §4: valid in a group iff valid on every online node of it).

Output format, one item per line, ``KEY VALUE`` split at the first space::

    extjobs-diagnose 1          header and format version
    provider NAME               starts a record
    path DIR                    where it was found (absent when not found)
    reason TEXT                 zero or more problems; none means valid
    optional open close ...     optional scripts present (may be empty)
    param LINE                  one per line of parameters.list, verbatim
    end                         ends the record
    done                        trailer: the output is complete

Names are ``[A-Za-z0-9_-]`` and search path entries may not contain newlines, so no
value can span or fake a line; ``param`` lines are prefixed, so parameters.list cannot
fake a record either.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import attrs

from extjobs.errors import ExtJobsError, InputError, ProviderError
from extjobs.extstorage.names import OPTIONAL_ACTIONS, REQUIRED_ACTIONS, validate_provider_name
from extjobs.extstorage.parameters import parse_parameters_list
from extjobs.model.remote import DEFAULT_PATH, RemoteCommand

__all__ = [
    "DIAGNOSE_SCRIPT",
    "GroupProviderStatus",
    "ProviderStatus",
    "diagnose_command",
    "parse_diagnose_output",
    "summarise_groups",
]

FORMAT_HEADER = "extjobs-diagnose 1"

_REQUIRED = " ".join(REQUIRED_ACTIONS)
_OPTIONAL = " ".join(OPTIONAL_ACTIONS)

# Arguments: MODE NNAMES NAME... DIR...   (MODE is "all" or "named")
DIAGNOSE_SCRIPT = f"""\
mode=$1; nnames=$2; shift 2
names=
while [ "$nnames" -gt 0 ]; do names="$names $1"; shift; nnames=$((nnames - 1)); done
printf '%s\\n' '{FORMAT_HEADER}'
if [ "$mode" = all ]; then
  for d in "$@"; do
    for p in "$d"/*; do
      [ -d "$p" ] || continue
      n=${{p##*/}}
      case $n in ''|*[!A-Za-z0-9_-]*) continue ;; esac
      case " $names " in *" $n "*) continue ;; esac
      names="$names $n"
    done
  done
fi
check_file() {{
  if [ ! -e "$2" ]; then
    if [ -L "$2" ]; then reason "$1 is a dangling symbolic link"
    elif [ "$3" = optional ]; then return 1
    else reason "$1 is missing"
    fi
  elif [ ! -f "$2" ]; then reason "$1 is not a regular file"
  elif [ "$3" != text ] && [ ! -x "$2" ]; then reason "$1 is not executable"
  elif [ "$3" = text ] && [ ! -r "$2" ]; then reason "$1 is not readable"
  else return 0
  fi
  return 1
}}
reason() {{ printf 'reason %s\\n' "$1"; }}
for name in $names; do
  printf 'provider %s\\n' "$name"
  found=
  for d in "$@"; do
    if [ -d "$d/$name" ]; then found=$d/$name; break; fi
  done
  if [ -z "$found" ]; then
    reason "not found in $(IFS=:; printf '%s' "$*")"
    printf 'end\\n'
    continue
  fi
  printf 'path %s\\n' "$found"
  for s in {_REQUIRED}; do check_file "script $s" "$found/$s" required; done
  optional=
  for s in {_OPTIONAL}; do
    if check_file "script $s" "$found/$s" optional; then optional="$optional $s"; fi
  done
  printf 'optional%s\\n' "$optional"
  if check_file parameters.list "$found/parameters.list" text; then
    {{ while IFS= read -r line || [ -n "$line" ]; do printf 'param %s\\n' "$line"; done \\
        < "$found/parameters.list"; }} 2>/dev/null || reason "parameters.list could not be read"
  fi
  printf 'end\\n'
done
printf 'done\\n'
"""


@attrs.frozen
class ProviderStatus:
    """What one node said about one provider.

    ``valid`` is true iff ``reason`` is ``None``. ``path`` is where the provider was
    found (``None`` when it was not). ``parameters`` is the parsed ``parameters.list``
    and ``optional`` the optional scripts that are present and executable.
    """

    name: str
    valid: bool
    path: str | None
    reason: str | None
    parameters: dict[str, str] = attrs.field(factory=dict)
    optional: tuple[str, ...] = ()


def _check_search_path(search_path: Sequence[str]) -> tuple[str, ...]:
    if isinstance(search_path, str):
        raise InputError("search path must be a sequence of directories", field="search_path")
    entries = tuple(search_path)
    if not entries:
        raise InputError("search path is empty", field="search_path")
    for entry in entries:
        if not entry.startswith("/") or "\n" in entry or "\0" in entry:
            raise InputError(
                f"search path entry {entry!r} must be an absolute path without newlines",
                field="search_path",
                value=entry,
            )
    return entries


def diagnose_command(
    search_path: Sequence[str],
    providers: Sequence[str] | None,
    timeout: float,
    *,
    path_env: str = DEFAULT_PATH,
) -> RemoteCommand:
    """One command reporting on ``providers`` (``None``: every provider found).

    Raises :class:`InputError` for an invalid provider name or a search path entry that
    is not absolute or contains a newline. Parse the output with
    :func:`parse_diagnose_output`.
    """
    entries = _check_search_path(search_path)
    if providers is None:
        head: tuple[str, ...] = ("all", "0")
    else:
        names = list(dict.fromkeys(validate_provider_name(p) for p in providers))
        head = ("named", str(len(names)), *names)
    return RemoteCommand(
        argv=("/bin/sh", "-c", DIAGNOSE_SCRIPT, "sh", *head, *entries),
        env={"PATH": path_env, "LC_ALL": "C"},
        timeout=timeout,
    )


def _garbled(node: str, number: int, line: str, why: str) -> ProviderError:
    return ProviderError(
        f"diagnose output from node {node!r} is garbled at line {number} ({why}): {line[:200]!r}",
        node=node,
        line=number,
    )


@attrs.define
class _Record:
    name: str
    path: str | None = None
    reasons: list[str] = attrs.field(factory=list)
    optional: tuple[str, ...] = ()
    param_lines: list[str] = attrs.field(factory=list)

    def finish(self) -> ProviderStatus:
        reasons = list(self.reasons)
        parameters: dict[str, str] = {}
        if not reasons:
            try:
                parameters = parse_parameters_list("\n".join(self.param_lines), provider=self.name)
            except ProviderError as exc:
                reasons.append(exc.message)
        reason = "; ".join(reasons) if reasons else None
        return ProviderStatus(
            name=self.name,
            valid=reason is None,
            path=self.path,
            reason=reason,
            parameters=parameters,
            optional=self.optional,
        )


def parse_diagnose_output(stdout: str, *, node: str) -> dict[str, ProviderStatus]:
    """Parse what :func:`diagnose_command` printed on ``node``.

    Raises :class:`ProviderError` (with ``node``) when the output is not in the format
    above, including when it was cut short (no ``done`` trailer).
    """
    lines = stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != FORMAT_HEADER:
        first = lines[0] if lines else ""
        raise _garbled(node, 1, first, "missing header")
    result: dict[str, ProviderStatus] = {}
    current: _Record | None = None
    finished = False
    for number, line in enumerate(lines[1:], start=2):
        if finished:
            raise _garbled(node, number, line, "text after the trailer")
        key, _, value = line.partition(" ")
        if current is None:
            if line == "done":
                finished = True
            elif key == "provider" and value:
                current = _Record(name=value)
            else:
                raise _garbled(node, number, line, "expected a provider record")
            continue
        if key == "param":
            current.param_lines.append(value)
        elif key == "path" and value:
            current.path = value
        elif key == "reason" and value:
            current.reasons.append(value)
        elif key == "optional":
            current.optional = tuple(value.split())
        elif line == "end":
            result[current.name] = current.finish()
            current = None
        else:
            raise _garbled(node, number, line, "unknown line")
    if not finished:
        raise ProviderError(
            f"diagnose output from node {node!r} is incomplete (was it cut short?)",
            node=node,
        )
    return result


@attrs.frozen
class GroupProviderStatus:
    """One provider in one node group.

    ``valid`` iff it is valid on every online node of the group. ``reasons`` maps each
    node where it is not to why. ``parameters`` are those declared on every node where
    it is valid (descriptions from the first such node in name order).
    """

    provider: str
    group: str
    valid: bool
    nodes: tuple[str, ...]
    reasons: dict[str, str] = attrs.field(factory=dict)
    parameters: dict[str, str] = attrs.field(factory=dict)


def _node_failure(error: ExtJobsError | BaseException | None) -> str:
    if error is None:
        return "node did not answer"
    message = error.message if isinstance(error, ExtJobsError) else str(error)
    return f"node unreachable or diagnose failed: {message}"


def summarise_groups(
    per_node: Mapping[str, Mapping[str, ProviderStatus] | BaseException],
    node_groups: Mapping[str, str],
    *,
    offline: Collection[str] = (),
) -> dict[str, dict[str, GroupProviderStatus]]:
    """Per node group and provider, whether the provider is usable there.

    ``per_node`` holds, for each node that was asked, either its parsed report or the
    error that prevented one. ``node_groups`` maps every node to its group; nodes in
    ``offline`` are left out. A node of a group that is neither offline nor in
    ``per_node``, or that failed, makes every provider of that group invalid with the
    reason. A provider a node did not report (it was not found there) is invalid in
    that node's group. Groups without a provider report are absent from the result.
    """
    members: dict[str, list[str]] = {}
    for node, group in sorted(node_groups.items()):
        if node not in offline:
            members.setdefault(group, []).append(node)
    summary: dict[str, dict[str, GroupProviderStatus]] = {}
    for group, nodes in members.items():
        reports: dict[str, Mapping[str, ProviderStatus]] = {}
        failures: dict[str, str] = {}
        for node in nodes:
            answer = per_node.get(node)
            if isinstance(answer, Mapping):
                reports[node] = answer
            else:
                failures[node] = _node_failure(answer)
        names = sorted({name for report in reports.values() for name in report})
        statuses: dict[str, GroupProviderStatus] = {}
        for name in names:
            reasons = dict(failures)
            valid_params: list[Mapping[str, str]] = []
            for node, report in reports.items():
                status = report.get(name)
                if status is None:
                    reasons[node] = "not found on this node"
                elif not status.valid:
                    reasons[node] = status.reason or "invalid"
                else:
                    valid_params.append(status.parameters)
            parameters: dict[str, str] = {}
            if valid_params:
                common = set(valid_params[0]).intersection(*valid_params[1:])
                parameters = {k: v for k, v in valid_params[0].items() if k in common}
            statuses[name] = GroupProviderStatus(
                provider=name,
                group=group,
                valid=not reasons,
                nodes=tuple(nodes),
                reasons=dict(sorted(reasons.items())),
                parameters=parameters,
            )
        if statuses:
            summary[group] = statuses
    return summary
