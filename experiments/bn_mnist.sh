#!/usr/bin/env bash
# The project's main job: set up, then run the BN study (Ioffe & Szegedy 2015, Fig. 1) end to end.
# MNIST when tfds can get it (internet, or a prepared data dir), else Fashion-MNIST from Debian's
# package. Extra arguments go to the study, e.g. --config.sweep.seed=0,1,2,3,4
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh

if .venv/bin/python -c "from bnreg.data import load_dataset; load_dataset('mnist')" 2>/dev/null; then
  dataset=mnist
else
  echo "MNIST is not available through tfds here; using Fashion-MNIST." >&2
  dataset=fashion_mnist
fi
workdir=runs/bn_$dataset
# The study's command gives XLA one CPU device per core itself (bnreg.cli), so its two nets
# train at the same time, one device each.
.venv/bin/python -m experiments.bn_mnist --workdir="$workdir" --config.dataset="$dataset" "$@"
echo "Results: $workdir/results.md; figures: $workdir/fig1a.png, $workdir/fig1bc.png, $workdir/sweep.png"
