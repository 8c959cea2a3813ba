# Sourced by the LVM stand-ins after _standin.sh; not a command itself.

# need_vg VG: set VG_DIR, or fail as LVM does when the volume group does not exist.
need_vg() {
  VG=$1
  VG_DIR=$STATE/lvm/$VG
  if ! valid_name "$VG" || [ ! -d "$VG_DIR" ]; then
    echo "  Volume group \"$VG\" not found" >&2
    echo "  Cannot process volume group $VG" >&2
    exit 5
  fi
}

# lv_paths VG LV: set VG, LV, VG_DIR, LV_IMG, LV_TAGS and LV_LINK (the "/dev/VG/LV" path).
lv_paths() {
  need_vg "$1"
  LV=$2
  LV_IMG=$VG_DIR/$LV.img
  LV_TAGS=$VG_DIR/$LV.tags
  LV_LINK=$STATE/dev/$VG/$LV
}

# need_lv VG/LV: lv_paths, failing as LVM does when the logical volume does not exist.
need_lv() {
  case $1 in
    */*) ;;
    *)
      echo "  $PROG: \"$1\" is not a logical volume (VG/LV expected)" >&2
      exit 3
      ;;
  esac
  lv_paths "${1%%/*}" "${1#*/}"
  if ! valid_name "$LV" || [ ! -f "$LV_IMG" ]; then
    echo "  Failed to find logical volume \"$VG/$LV\"" >&2
    exit 5
  fi
}

# vg_free_mib: MiB left in VG_DIR's volume group (a large number when it has no capacity).
vg_free_mib() {
  if [ -f "$VG_DIR/capacity" ]; then
    echo $(($(cat "$VG_DIR/capacity") - $(used_mib "$VG_DIR")))
  else
    echo 1073741824
  fi
}
