# Shared by the bench scripts (sourced after they cd to the repository root):
#   die MSG...     print "SCRIPT: error: MSG" and exit 1
#   usage          print the script's header comment (its usage)
#   step NAME CMD  run CMD with stderr to $logs/NAME.log; on failure print the log's tail and die

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

step() {
  local name=$1
  shift
  if ! "$@" 2>"$logs/$name.log"; then
    echo "---- last lines of $logs/$name.log" >&2
    tail -n 25 "$logs/$name.log" >&2
    die "step '$name' failed: $*"
  fi
}
