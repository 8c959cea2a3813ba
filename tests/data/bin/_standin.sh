# Sourced by the LVM and ZFS stand-ins of this directory; not a command itself.
#
# The stand-ins keep volumes as sparse files mapped to loop devices, in the state
# directory next to this one (../state, layout in README.md). They run with the clean
# environment extjobs gives provider scripts (PATH, LC_ALL, VOL_*, EXTP_*), so they find
# the state from their own location rather than from a variable: give every test its
# own copy of this directory.
#
# Every stand-in holds ../state/lock while it runs, so concurrent calls see a
# consistent state.

set -u

STANDIN_BIN=$(cd -- "${0%/*}" && pwd) || exit 5
STATE=${STANDIN_BIN%/*}/state
PROG=${0##*/}
MIB=1048576

mkdir -p -- "$STATE/lvm" "$STATE/zfs" "$STATE/dev" || exit 5
exec 9>>"$STATE/lock" || exit 5
flock -w 60 9 || {
  echo "  $PROG: timed out waiting for $STATE/lock" >&2
  exit 5
}

# size_mib VALUE UNIT: VALUE (digits with an optional b/k/m/g/t suffix; UNIT when it
# has none) as a whole number of MiB. Fails for anything else or a partial MiB.
size_mib() {
  local value=$1 unit=$2 number
  case $value in
    *[bBkKmMgGtT]) unit=${value: -1} number=${value%?} ;;
    *) number=$value ;;
  esac
  case $number in
    '' | *[!0-9]*) return 1 ;;
  esac
  number=$((10#$number))
  case $unit in
    b | B) ((number % MIB == 0)) || return 1; echo $((number / MIB)) ;;
    k | K) ((number % 1024 == 0)) || return 1; echo $((number / 1024)) ;;
    m | M) echo "$number" ;;
    g | G) echo $((number * 1024)) ;;
    t | T) echo $((number * 1024 * 1024)) ;;
    *) return 1 ;;
  esac
}

# file_mib FILE: the size of FILE in MiB (rounded down).
file_mib() {
  echo $(($(stat -c %s -- "$1") / MIB))
}

# used_mib DIR: MiB taken by every volume file under DIR.
used_mib() {
  local total=0 image
  while IFS= read -r image; do
    total=$((total + $(file_mib "$image")))
  done < <(find "$1" -name '*.img' -type f)
  echo "$total"
}

# loops_of FILE: the loop devices backed by FILE, one per line.
loops_of() {
  losetup -n -O NAME -j "$1"
}

# activate FILE LINK: map FILE to a loop device (reusing an existing mapping) and
# point the symlink LINK at the device.
activate() {
  local dev
  dev=$(loops_of "$1" | head -n 1)
  if [ -z "$dev" ]; then
    dev=$(losetup --find --show -- "$1") || return 1
  fi
  mkdir -p -- "${2%/*}" && ln -sfn -- "$dev" "$2"
}

# deactivate FILE LINK: remove LINK and every loop mapping of FILE.
deactivate() {
  local dev
  rm -f -- "$2"
  for dev in $(loops_of "$1"); do
    losetup -d "$dev" || return 1
  done
}

# resize FILE MIB: set FILE's size and make its loop devices see it.
resize() {
  local dev
  truncate -s "$2M" -- "$1" || return 1
  for dev in $(loops_of "$1"); do
    losetup -c "$dev" || return 1
  done
}

# valid_name NAME: the characters LVM and ZFS both accept in a volume name.
valid_name() {
  case $1 in
    '' | [-.]* | *[!A-Za-z0-9+_.-]*) return 1 ;;
  esac
}
