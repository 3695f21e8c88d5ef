# Shared by the bench scripts (sourced, not run).

# need COMMAND PACKAGE: true if COMMAND is there, installing the Debian PACKAGE first when run
# as root with apt-get.
need() {
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2"; }
  fi
  command -v "$1" >/dev/null
}
