# Loop device helpers, sourced after common.sh.

# loop_devices: the loop devices on this node backed by the volume file, one a line.
loop_devices() {
  [ -e "$IMG" ] || return 0
  losetup -n -O NAME -j "$IMG" || die "losetup cannot list the mappings of $IMG"
}

# detach_all: unmap every loop device backed by the volume file.
detach_all() {
  for _dev in $(loop_devices); do
    losetup -d "$_dev" || die "cannot detach $_dev"
  done
}
