# Shared by every script of this provider: sourced, never run on its own.
#
# The shipped sharedfile provider's common.sh (sharedfile-common.sh, a link to
# providers/sharedfile/common.sh that installing the provider copies as a file), plus
# what makes this provider strict:
#   <VOL_NAME>.attached/   one marker per node that has the volume attached
#
# shellcheck source=../../../../providers/sharedfile/common.sh
. "${0%/*}/sharedfile-common.sh"

ATTACHED_DIR=$VOL_DIR/$VOL_NAME.attached

# attach_volume: refused while another node holds the volume open exclusively.
attach_volume() {
  take_lock
  need_volume
  _me=$(node_id) || exit 1
  for _marker in "$OPEN_DIR"/*.exclusive; do
    [ -e "$_marker" ] || continue
    _holder=${_marker##*/}
    _holder=${_holder%.*}
    [ "$_holder" = "$_me" ] ||
      die "volume $VOL_NAME is open exclusively on node $_holder; refusing to attach on $_me"
  done
  mkdir -p "$ATTACHED_DIR" && : >"$ATTACHED_DIR/$_me" || die "cannot record the attachment"
}

detach_volume() {
  take_lock
  _me=$(node_id) || exit 1
  rm -f "$ATTACHED_DIR/$_me"
  rmdir "$ATTACHED_DIR" 2>/dev/null || true
}

# refuse_if_attached: the volume must not be attached on any node (remove calls it
# before the shipped remove_files, which refuses while another node holds it open).
refuse_if_attached() {
  take_lock
  for _marker in "$ATTACHED_DIR"/*; do
    [ -e "$_marker" ] || continue
    die "volume $VOL_NAME is still attached on node ${_marker##*/}"
  done
}
