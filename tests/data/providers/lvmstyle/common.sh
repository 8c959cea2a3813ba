# Sourced by every script of this provider by a path relative to the provider
# directory, as many public providers do: the scripts only work when started there.

# Site settings; ./config may override them.
DEV_DIR=/dev
if [ -f ./config ]; then
  . ./config
fi

say() {
  echo "lvmstyle: $*" >&2
}

# run_lvm COMMAND ARGS...: run an LVM command, everything it prints going to stderr.
# The pipeline's status is sed's, so a failing LVM command does not stop the script:
# the habit of the public providers this one is modelled on.
run_lvm() {
  "$@" 2>&1 | sed 's/^ */lvmstyle: /' >&2
}

if [ -z "$EXTP_VG" ]; then
  say "the vg parameter is required"
  exit 1
fi
LV=$EXTP_VG/$VOL_NAME
DEV=$DEV_DIR/$EXTP_VG/$VOL_NAME
