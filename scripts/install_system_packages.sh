#!/usr/bin/env bash
# Debian packages the test suite needs besides Python: bubblewrap (the autograding sandbox), chromium (the browser
# test), PostgreSQL 15 (the server-gradebook test). Run as root (CI does, through .ci/run); `make system-packages`
# runs it with sudo where needed. Installs only what is missing, so a second run costs a second.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: bubblewrap, chromium and postgresql-15 are installed"
  exit 0
fi
echo "system packages: installing ${need[*]}"
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
