"""Daemonised guest processes on a node: pid files, liveness, status and stop.

Every backend keeps, in the node's run directory (see
:func:`~extjobs.hypervisors.base.run_dir_for`), a pid file ``<key>.pid`` per running
instance, where ``<key>`` is the instance's uuid (so a rename changes nothing on the
node). The scripts below are constants: the run directory, the key and every path
travel as positional arguments, never spliced into shell text.

A pid file is trusted only while the process is alive, not a zombie, and its command
line mentions the key (a pid reused by an unrelated process after a crash is not ours).

Status output, one line::

    running <pid> <absolute run dir>
    stopped [<absolute run dir>]

The guest listing (the watcher asks each node once per round, whatever the backend:
every backend keeps its pid files the same way) prints ``guests [<absolute run dir>]``,
then ``running <key> <pid>`` for every guest whose pid file is trusted.
"""

from __future__ import annotations

from extjobs.model.remote import DEFAULT_PATH, RemoteCommand

#: Shell functions shared by the scripts. ``alive PID``: exists and is not a zombie.
#: ``ours PID KEY``: alive and started for KEY. ``running_pid KEY``: print the pid of
#: KEY's process, if running.
PROCESS_FUNCTIONS = r"""
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  _st=$(sed -n 's/.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
  case $_st in Z | X) return 1 ;; esac
}
ours() {
  alive "$1" || return 1
  tr '\000' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -F -q -e "$2"
}
running_pid() {
  _pid=
  [ -r "$1.pid" ] && IFS= read -r _pid <"$1.pid"
  case $_pid in '' | *[!0-9]*) return 1 ;; esac
  ours "$_pid" "$1" || return 1
  printf '%s\n' "$_pid"
}
"""

# Arguments: RUNDIR KEY
STATUS_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
cd -- "$1" 2>/dev/null || { printf 'stopped\n'; exit 0; }
dir=$(pwd -P)
if pid=$(running_pid "$2"); then
  printf 'running %s %s\n' "$pid" "$dir"
else
  printf 'stopped %s\n' "$dir"
fi
"""
)

# Arguments: RUNDIR KEY GRACE MODE   (MODE: "group" kills the process group, "process"
# the process only). SIGTERM, then SIGKILL after GRACE seconds; then the pid file and
# the control socket are removed. Stopping what does not run succeeds.
STOP_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
key=$2; grace=$3; mode=$4
cd -- "$1" 2>/dev/null || { printf 'stopped\n'; exit 0; }
dir=$(pwd -P)
if pid=$(running_pid "$key"); then
  target=$pid
  [ "$mode" = group ] && target=-$pid
  kill -s TERM -- "$target" 2>/dev/null
  ticks=0
  while ours "$pid" "$key"; do
    ticks=$((ticks + 1))
    if [ "$ticks" -gt $((grace * 10)) ]; then
      kill -s KILL -- "$target" 2>/dev/null
      [ "$ticks" -gt $((grace * 10 + 50)) ] && {
        printf 'process %s of %s does not die\n' "$pid" "$key" >&2
        exit 1
      }
    fi
    sleep 0.1
  done
fi
rm -f -- "$key.pid" "$key.qmp"
printf 'stopped %s\n' "$dir"
"""
)


# Arguments: RUNDIR. What the node offers guests, in whole MiB (see
# extjobs.hypervisors.base.parse_node_info): MemTotal and MemAvailable of /proc/meminfo.
MEMINFO = r"""
awk '/^MemTotal:/ { t = int($2 / 1024) } /^MemAvailable:/ { f = int($2 / 1024) }
     END { if (t == "") exit 1; if (f == "") f = t
           printf "memory_total %d\nmemory_free %d\n", t, f }' /proc/meminfo || {
  printf 'cannot read MemTotal from /proc/meminfo\n' >&2
  exit 1
}
"""
NODE_INFO_SCRIPT = MEMINFO

# Arguments: RUNDIR
GUESTS_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
cd -- "$1" 2>/dev/null || { printf 'guests\n'; exit 0; }
printf 'guests %s\n' "$(pwd -P)"
for f in *.pid; do
  [ -e "$f" ] || continue
  key=${f%.pid}
  if pid=$(running_pid "$key"); then
    printf 'running %s %s\n' "$key" "$pid"
  fi
done
"""
)


def process_command(script: str, args: tuple[str, ...], *, timeout: float) -> RemoteCommand:
    """``/bin/sh -c SCRIPT sh ARGS...`` with a clean environment."""
    return RemoteCommand(
        argv=("/bin/sh", "-c", script, "sh", *args),
        env={"PATH": DEFAULT_PATH, "LC_ALL": "C"},
        timeout=timeout,
    )
