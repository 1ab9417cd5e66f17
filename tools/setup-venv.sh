#!/usr/bin/env bash
# Create .venv and install jmlnet-geo with its pinned stack, on a fresh Debian with Python 3.11.
# Installs the few system packages the stack needs when they are missing (a C compiler and the
# Python headers, for pydensecrf2, which has no wheels), using apt-get as root or through sudo.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python >= 3.11 is needed (apt-get install python3); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing $*; install them with your package manager and run make again" >&2
    exit 1
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  echo "installing system packages: $*"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc g++)
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$include/Python.h" ] || need+=("$(basename "$PYTHON")-dev")
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv without ensurepip unless python3-venv is installed: bootstrap pip from PyPI.
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV"
    "$VENV/bin/python" - <<'PY'
import json, subprocess, sys, tempfile, urllib.request
release = json.load(urllib.request.urlopen("https://pypi.org/pypi/pip/json"))
wheel = next(f for f in release["urls"] if f["filename"].endswith(".whl"))
path = tempfile.mkdtemp() + "/" + wheel["filename"]
urllib.request.urlretrieve(wheel["url"], path)
subprocess.check_call([sys.executable, path + "/pip", "install", "--no-index", path])
PY
  fi
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet -e '.[dev,distributed,bench]'
