"""The ``fake`` hypervisor: one small process per running instance holding its disks open.

The memory a fake node offers is its ``/proc/meminfo``, or the number of MiB in
``fake-node-memory`` in the node's run directory when that file exists.

It runs no guest, but it proves where an instance's disks are in use: the process
(``sh`` named ``extjobs-fake-<key>``, in a session of its own, pid in ``<key>.pid``)
opens every disk path read-only on file descriptors 3, 4, … and sleeps; tests look at
``/proc/<pid>/fd``. ``start`` returns once every descriptor is open, or fails with the
reason (a missing device, a permission error). Stopping kills the process group.

POSIX ``sh`` redirects single-digit descriptors only, so an instance has at most
:data:`MAX_DISKS` disks under this backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from extjobs.errors import HypervisorError
from extjobs.extstorage.attach import AttachInfo
from extjobs.hypervisors.base import Hypervisor, instance_key, userspace_or_device
from extjobs.hypervisors.process import MEMINFO, PROCESS_FUNCTIONS, process_command
from extjobs.model.cluster import HypervisorName, Instance
from extjobs.model.remote import RemoteCommand

MAX_DISKS = 7

#: The file in a node's run directory that sets the memory a fake node offers (MiB), so
#: that tests and demos can give nodes different sizes; without it, /proc/meminfo.
NODE_MEMORY_FILE = "fake-node-memory"

# Arguments: RUNDIR
NODE_INFO_SCRIPT = (
    r"""
f=$1/"""
    + NODE_MEMORY_FILE
    + r"""
if [ -e "$f" ]; then
  IFS= read -r mib <"$f"
  case $mib in
    '' | *[!0-9]*) printf '%s holds %s, not a number of MiB\n' "$f" "$mib" >&2; exit 1 ;;
  esac
  printf 'memory_total %s\nmemory_free %s\n' "$mib" "$mib"
  exit 0
fi
"""
    + MEMINFO
)

#: The holder: opens "$@" on fds 3.. then sleeps; killed as a process group. On SIGUSR1
#: (a disk plugged in or out while it runs) it closes them all and opens, in order, the
#: paths listed in ``<key>.disks`` in its run directory, then renames that file to
#: ``<key>.disks.done`` — or ``<key>.disks.failed`` with the reason when a path cannot
#: be opened (it then holds the ones before it). Its sleep holds no disk. Not SIGHUP: a
#: node server started under ``nohup`` hands SIGHUP down ignored, and a shell cannot trap
#: a signal that was ignored when it started.
HOLDER_SCRIPT = r"""
key=${0#extjobs-fake-}
n=3
for p; do
  eval "exec $n<\"\$p\"" || exit 1
  n=$((n + 1))
done
replug() {
  i=3
  while [ "$i" -le 9 ]; do eval "exec $i<&-"; i=$((i + 1)); done
  n=3
  while IFS= read -r p; do
    if [ ! -r "$p" ]; then
      printf 'cannot open %s\n' "$p" >"$key.disks.failed"
      rm -f -- "$key.disks"
      return
    fi
    eval "exec $n<\"\$p\""
    n=$((n + 1))
  done <"$key.disks"
  mv -f -- "$key.disks" "$key.disks.done"
}
trap replug USR1
while :; do
  sleep 3600 3<&- 4<&- 5<&- 6<&- 7<&- 8<&- 9<&- &
  wait $!
  kill $! 2>/dev/null
done
"""

# Arguments: RUNDIR KEY PATH...: the running holder of KEY re-opens exactly PATH...
REPLUG_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
key=$2
cd -- "$1" || exit 1
shift 2
pid=$(running_pid "$key") || { printf 'the fake guest of %s does not run\n' "$key" >&2; exit 1; }
for p; do
  [ -e "$p" ] || { printf 'disk %s does not exist on this node\n' "$p" >&2; exit 1; }
done
rm -f -- "$key.disks.done" "$key.disks.failed"
if [ $# -gt 0 ]; then printf '%s\n' "$@"; fi >"$key.disks.tmp" || exit 1
mv -f -- "$key.disks.tmp" "$key.disks" || exit 1
kill -s USR1 "$pid" || exit 1
ticks=0
while [ ! -e "$key.disks.done" ]; do
  if [ -e "$key.disks.failed" ]; then cat -- "$key.disks.failed" >&2; exit 1; fi
  ticks=$((ticks + 1))
  [ "$ticks" -lt 200 ] || { printf 'the fake guest of %s did not re-open its disks\n' "$key" >&2; exit 1; }
  sleep 0.05
done
rm -f -- "$key.disks.done"
printf 'holding %s disk(s)\n' "$#"
"""
)

# Arguments: RUNDIR KEY PATH...
START_SCRIPT = (
    PROCESS_FUNCTIONS
    + r"""
key=$2
mkdir -p -- "$1" && cd -- "$1" || exit 1
dir=$(pwd -P)
shift 2
if pid=$(running_pid "$key"); then
  printf 'running %s %s\n' "$pid" "$dir"
  exit 0
fi
for p; do
  [ -e "$p" ] || { printf 'disk %s does not exist on this node\n' "$p" >&2; exit 1; }
done
setsid /bin/sh -c "$HOLDER" "extjobs-fake-$key" "$@" </dev/null >/dev/null 2>&1 &
pid=$!
printf '%s\n' "$pid" >"$key.pid.tmp" && mv -f -- "$key.pid.tmp" "$key.pid" || exit 1
last=$(($# + 2))
ticks=0
# Our own child, not reaped: its pid cannot be anyone else's yet. (Its command line is
# not checked here: while it execs setsid and then sh, /proc/PID/cmdline reads empty.)
while [ ! -e "/proc/$pid/fd/$last" ]; do
  if ! alive "$pid"; then
    rm -f -- "$key.pid"
    printf 'the fake guest of %s exited at start (cannot open its disks?)\n' "$key" >&2
    exit 1
  fi
  ticks=$((ticks + 1))
  [ "$ticks" -lt 200 ] || { printf 'the fake guest of %s did not start\n' "$key" >&2; exit 1; }
  sleep 0.05
done
printf 'running %s %s\n' "$pid" "$dir"
"""
)


class FakeHypervisor(Hypervisor):
    name: ClassVar[HypervisorName] = HypervisorName.FAKE
    stop_mode: ClassVar[str] = "group"
    max_disks: ClassVar[int | None] = MAX_DISKS
    replugs: ClassVar[bool] = True

    def disk_path(self, info: AttachInfo, access: str, *, node: str, provider: str) -> str:
        path = userspace_or_device(info, access, self.name.value, node=node, provider=provider)
        if not path.startswith("/"):
            raise HypervisorError(
                f"the fake hypervisor needs a path, not {path!r} (provider {provider!r})",
                node=node,
                provider=provider,
            )
        return path

    def start_command(
        self, instance: Instance, disk_paths: Sequence[str], run_dir: str, *, timeout: float
    ) -> RemoteCommand:
        if len(disk_paths) > MAX_DISKS:
            raise HypervisorError(
                f"the fake hypervisor holds at most {MAX_DISKS} disks; "
                f"instance {instance.name} has {len(disk_paths)}",
                instance=instance.name,
            )
        command = process_command(
            START_SCRIPT, (run_dir, instance_key(instance), *disk_paths), timeout=timeout
        )
        return RemoteCommand(
            argv=command.argv,
            env={**command.env_dict, "HOLDER": HOLDER_SCRIPT},
            timeout=command.timeout,
        )

    def node_info_command(self, run_dir: str, *, timeout: float) -> RemoteCommand:
        return process_command(NODE_INFO_SCRIPT, (run_dir,), timeout=timeout)

    def replug_command(
        self, key: str, run_dir: str, disk_paths: Sequence[str], *, timeout: float
    ) -> RemoteCommand | None:
        if len(disk_paths) > MAX_DISKS:
            raise HypervisorError(f"the fake hypervisor holds at most {MAX_DISKS} disks")
        return process_command(REPLUG_SCRIPT, (run_dir, key, *disk_paths), timeout=timeout)
