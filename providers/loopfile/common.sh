# Shared by every script of this provider: sourced, never run on its own.
#
# Layout in the volume directory (parameter "dir", shared by all nodes):
#   <VOL_NAME>.img     the sparse volume file
#   <VOL_NAME>.meta    the last VOL_METADATA given to setinfo
#   <VOL_NAME>.snap-<VOL_SNAPSHOT_NAME>
#                      a snapshot: a sparse copy of the volume file (removed with it)
#   <VOL_NAME>.open/   one marker per node that has the volume open:
#                      <node-id>.exclusive or <node-id>.shared
#   <VOL_NAME>.lock    flock(1) lock serialising the scripts of one volume
#
# Node identity: the first line of the file "node-id" in the provider directory when
# it exists (the provider directory is per node), otherwise `uname -n`.

set -u

case $0 in
  */*) PROVIDER_DIR=${0%/*} ;;
  *) PROVIDER_DIR=. ;;
esac
PROVIDER_DIR=$(cd -- "$PROVIDER_DIR" && pwd) || exit 1
PROVIDER_NAME=${PROVIDER_DIR##*/}
ACTION=${0##*/}

die() {
  printf '%s %s: %s\n' "$PROVIDER_NAME" "$ACTION" "$*" >&2
  exit 1
}

VOL_DIR=${EXTP_DIR:-/var/lib/extjobs/$PROVIDER_NAME}
case $VOL_DIR in
  /*) ;;
  *) die "parameter dir must be an absolute path, not '$VOL_DIR'" ;;
esac

VOL_NAME=${VOL_NAME:-}
# capacity is about the directory, not a volume: it gets no VOL_NAME.
if [ "$ACTION" != capacity ]; then
  case $VOL_NAME in
    '' | .* | */*) die "invalid or missing VOL_NAME '$VOL_NAME'" ;;
  esac
fi

IMG=$VOL_DIR/$VOL_NAME.img
META=$VOL_DIR/$VOL_NAME.meta
OPEN_DIR=$VOL_DIR/$VOL_NAME.open
LOCK=$VOL_DIR/$VOL_NAME.lock

# need_mib VAR: VAR must hold a whole number of MiB.
need_mib() {
  eval "_value=\${$1:-}"
  case $_value in
    '' | *[!0-9]*) die "$1 must be a whole number of MiB, not '$_value'" ;;
  esac
}

need_dir() {
  [ -d "$VOL_DIR" ] || die "volume directory $VOL_DIR does not exist"
}

need_volume() {
  [ -f "$IMG" ] || die "volume $VOL_NAME does not exist in $VOL_DIR"
}

# take_lock: hold the volume's lock until the script exits.
take_lock() {
  [ -z "${_LOCKED:-}" ] || return 0
  need_dir
  exec 9>>"$LOCK" || die "cannot open lock file $LOCK"
  flock -w 60 9 || die "timed out waiting for the lock on $VOL_NAME"
  _LOCKED=1
}

node_id() {
  if [ -r "$PROVIDER_DIR/node-id" ]; then
    IFS= read -r _id <"$PROVIDER_DIR/node-id" || [ -n "${_id:-}" ] || _id=
  else
    _id=$(uname -n)
  fi
  case $_id in
    '' | *[!A-Za-z0-9._-]*) die "invalid node identity '$_id'" ;;
  esac
  printf '%s\n' "$_id"
}

# open_volume True|False: record this node as holding the volume open.
# An exclusive open is refused while any other node holds it open; a shared open is
# refused while another node holds it exclusively. Reopening on the same node only
# changes the mode.
open_volume() {
  take_lock
  need_volume
  _me=$(node_id) || exit 1
  mkdir -p "$OPEN_DIR" || die "cannot create $OPEN_DIR"
  for _marker in "$OPEN_DIR"/*; do
    [ -e "$_marker" ] || continue
    _holder=${_marker##*/}
    _mode=${_holder##*.}
    _holder=${_holder%.*}
    [ "$_holder" = "$_me" ] && continue
    if [ "$1" = True ]; then
      die "volume $VOL_NAME is open ($_mode) on node $_holder; refusing an exclusive open on $_me"
    elif [ "$_mode" = exclusive ]; then
      die "volume $VOL_NAME is open exclusively on node $_holder; refusing a shared open on $_me"
    fi
  done
  rm -f "$OPEN_DIR/$_me.exclusive" "$OPEN_DIR/$_me.shared"
  if [ "$1" = True ]; then
    : >"$OPEN_DIR/$_me.exclusive" || die "cannot write $OPEN_DIR/$_me.exclusive"
  else
    : >"$OPEN_DIR/$_me.shared" || die "cannot write $OPEN_DIR/$_me.shared"
  fi
}

# close_volume: forget this node's open marker (a no-op when it has none).
close_volume() {
  take_lock
  _me=$(node_id) || exit 1
  rm -f "$OPEN_DIR/$_me.exclusive" "$OPEN_DIR/$_me.shared"
  rmdir "$OPEN_DIR" 2>/dev/null || true
}

# other_holders: the nodes other than this one that hold the volume open.
other_holders() {
  _me=$(node_id) || exit 1
  for _marker in "$OPEN_DIR"/*; do
    [ -e "$_marker" ] || continue
    _holder=${_marker##*/}
    _holder=${_holder%.*}
    [ "$_holder" = "$_me" ] || printf '%s ' "$_holder"
  done
}

open_mode() {
  case ${VOL_OPEN_EXCLUSIVE:-True} in
    True | False) printf '%s\n' "${VOL_OPEN_EXCLUSIVE:-True}" ;;
    *) die "VOL_OPEN_EXCLUSIVE must be True or False, not '$VOL_OPEN_EXCLUSIVE'" ;;
  esac
}

# create_file: make the sparse volume file of VOL_SIZE MiB; refuse if it exists.
create_file() {
  need_mib VOL_SIZE
  take_lock
  (set -C && : >"$IMG") 2>/dev/null || die "volume $IMG already exists"
  truncate -s "${VOL_SIZE}M" "$IMG" || {
    rm -f "$IMG"
    die "cannot size $IMG to $VOL_SIZE MiB"
  }
}

# grow_file: extend the volume file to VOL_NEW_SIZE MiB; never shrinks.
grow_file() {
  need_mib VOL_NEW_SIZE
  take_lock
  need_volume
  _new=$((VOL_NEW_SIZE * 1048576))
  _cur=$(stat -c %s "$IMG") || die "cannot stat $IMG"
  [ "$_new" -ge "$_cur" ] || die "refusing to shrink $VOL_NAME from $_cur to $_new bytes"
  truncate -s "${VOL_NEW_SIZE}M" "$IMG" || die "cannot grow $IMG to $VOL_NEW_SIZE MiB"
}

set_metadata() {
  take_lock
  need_volume
  printf '%s\n' "${VOL_METADATA:-}" >"$META.tmp" && mv -f "$META.tmp" "$META" ||
    die "cannot write $META"
}

# remove_files: delete the volume; refused while another node holds it open.
remove_files() {
  take_lock
  _others=$(other_holders) || exit 1
  [ -z "$_others" ] || die "volume $VOL_NAME is still open on node(s) $_others"
  rm -f "$IMG" "$META" "$META.tmp" "$IMG.snapshot.tmp" || die "cannot remove $IMG"
  for _snap in "$VOL_DIR/$VOL_NAME".snap-*; do
    [ -e "$_snap" ] || continue
    rm -f -- "$_snap" || die "cannot remove snapshot $_snap"
  done
  rm -rf "$OPEN_DIR"
  rm -f "$LOCK"
}

# snapshot_file: copy the volume file to <VOL_NAME>.snap-<VOL_SNAPSHOT_NAME> (sparse, a
# reflink where the file system can); refuse if that snapshot exists. The caller makes
# the data consistent first (extjobs freezes or pauses a running guest).
snapshot_file() {
  take_lock
  need_volume
  need_mib VOL_SNAPSHOT_SIZE
  _snap=${VOL_SNAPSHOT_NAME:-}
  case $_snap in
    '' | .* | */*) die "invalid or missing VOL_SNAPSHOT_NAME '$_snap'" ;;
  esac
  _file=$VOL_DIR/$VOL_NAME.snap-$_snap
  [ ! -e "$_file" ] || die "snapshot $_snap of $VOL_NAME already exists ($_file)"
  cp --reflink=auto --sparse=always -- "$IMG" "$IMG.snapshot.tmp" || {
    rm -f -- "$IMG.snapshot.tmp"
    die "cannot copy $IMG"
  }
  mv -f -- "$IMG.snapshot.tmp" "$_file" || die "cannot write $_file"
}

verify_dir() {
  need_dir
  [ -w "$VOL_DIR" ] || die "volume directory $VOL_DIR is not writable"
  command -v flock >/dev/null 2>&1 || die "flock(1) is not installed"
  command -v truncate >/dev/null 2>&1 || die "truncate(1) is not installed"
}

# report_capacity: total and free MiB of the file system holding the volume directory,
# then "shared" (every node sees the same directory). See docs/providers.md.
report_capacity() {
  need_dir
  # POSIX df: 1024-byte blocks; line 2 is "fs total used available capacity mount".
  _df=$(df -P -k -- "$VOL_DIR") || die "cannot read the free space of $VOL_DIR"
  printf '%s\n' "$_df" | awk 'NR == 2 { printf "%d %d\nshared\n", $2 / 1024, $4 / 1024 }'
}
