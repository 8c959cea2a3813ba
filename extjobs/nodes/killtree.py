"""Killing a command on a node: its session, its process group and their descendants.

sshd (and the embedded node) start every exec request as the leader of a new session;
its id, which is also the leader's process group id and PID, is what the runner learns
from the marker line (:mod:`extjobs.nodes.command`) and the engine journals. Killing
that process group alone misses a background child that called ``setsid`` (or
``setpgid``): it has left the group and the session. :data:`KILL_TREE` takes, on the
node,

* every process whose session or process group is the command's, and
* every descendant of those, following parent links in ``/proc`` — which is where a
  ``setsid`` child still hangs while its parent lives.

The processes found are stopped (SIGSTOP) and the walk repeated until it finds no new
one (a stopped process cannot fork; a fork under way shows its child in the next walk;
at most 20 rounds), then all are SIGKILLed. One walk is one ``grep`` over
``/proc/*/stat`` and one ``awk`` (POSIX tools, in busybox too), however many processes
the node runs. Each record is keyed by the *file name* grep prefixes to every line, and
the fields are read after the *last* ``") "``, so a process name holding a newline or a
parenthesis cannot pass another process off as part of the command.

Not reached: a process that left the session *and* whose parent chain to the command
was cut before the kill (a double fork whose middle process exited, ``daemon(3)``). It
has been reparented to init, and nothing on a node without a cgroup per command ties it
to the command any more.
"""

from __future__ import annotations

#: Defines ``kill_tree SID`` (prints ``killed`` when it killed anything; always exits
#: 0) for a POSIX shell script.
KILL_TREE = r"""
export LC_ALL=C
tree_of() {
  (cd /proc && grep -s '' [0-9]*/stat) | awk -v s="$1" '
    function take(   line, f) {
      line = text
      if (cur == "" || cur == 1 || !sub(/^.*\) /, "", line)) return
      split(line, f, " ")
      parent[cur] = f[2]
      if (f[3] == s || f[4] == s) hit[cur] = 1
    }
    {
      i = index($0, "/stat:")
      key = substr($0, 1, i - 1)
      rest = substr($0, i + 6)
      if (key == cur) { text = text "\n" rest } else { take(); cur = key; text = rest }
    }
    END {
      take()
      do {
        more = 0
        for (p in parent) if (!(p in hit) && (parent[p] in hit)) { hit[p] = 1; more = 1 }
      } while (more)
      for (p in hit) print p
    }'
}
kill_tree() {
  _found=' '
  _rounds=0
  while [ "$_rounds" -lt 20 ]; do
    _new=
    for _p in $(tree_of "$1"); do
      case $_found in *" $_p "*) ;; *) _new="$_new $_p" ;; esac
    done
    [ -n "$_new" ] || break
    kill -s STOP $_new 2>/dev/null
    _found="$_found${_new# } "
    _rounds=$((_rounds + 1))
  done
  [ "$_found" != ' ' ] || return 0
  kill -s KILL $_found 2>/dev/null
  echo killed
}
"""
