#!/usr/bin/env bash
# Idempotent set-up on a Debian/Ubuntu machine: a virtual environment in .venv with bnreg and its
# test tools, and the real Fashion-MNIST from Debian's dataset-fashion-mnist package when it is
# missing and this user can install packages (root, or password-less sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import bnreg, pytest, jupytext, nbclient" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.bnreg-installed ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch .venv/.bnreg-installed
fi

fashion_dir=/usr/share/datasets/fashion-mnist
if [ ! -d "$fashion_dir" ] && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
  if [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; then
    echo "Installing Debian's dataset-fashion-mnist (the real Fashion-MNIST files) ..."
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      dataset-fashion-mnist >/dev/null || echo "Could not install dataset-fashion-mnist." >&2
  fi
fi
