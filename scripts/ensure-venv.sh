#!/usr/bin/env bash
# Create the project venv; on a bare Debian the venv module lives in python3-venv.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    echo "python venv module missing; installing python3-venv" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q python3-venv
    "$python" -m venv "$venv"
fi
