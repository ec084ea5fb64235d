#!/usr/bin/env bash
# The prepared accelerator check: one script a lent GPU (or TPU) machine runs as it is, at most
# 8 minutes, its results in benchmarks/results/accelerator_check/ (with --cpu:
# benchmarks/results/accelerator_check_cpu/, a dry run of every step at small size on the CPU).
#
#   bash benchmarks/accelerator_check.sh          # on the accelerator machine
#   bash benchmarks/accelerator_check.sh --cpu    # the dry run, anywhere (~3 min on 2 cores)
#
# Steps, each under its own time limit so that one that hangs cannot take the others' time:
#   1. the devices JAX finds (on the accelerator run, no accelerator is an error);
#   2. the BN study's main phase at full size (benchmarks/bn_mnist_study.py: 2 nets × 3 seeds
#      × 50,000 steps with the study's evaluations, bnreg's engine only);
#   3. the dropout nets' throughput at paper width (benchmarks/dropout_throughput.py: the
#      3×1024 dropout + max-norm MLP, with and without dropout, and the matmul peak);
#   4. a data-parallel scaling row (benchmarks/data_parallel.py: one member's batch over
#      1, 2, … devices, as many as there are; one device gives its one-device row).
# Fashion-MNIST: from Debian's package where installed, else from the raw .gz files in
# $FASHION_MNIST_DIR (default data/fashion-mnist, git-ignored: copy them there to carry them
# to a machine without the package); without either, steps 3 and 4 use synthetic data and step
# 2 is skipped with a message.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=accelerator
if [[ "${1:-}" == "--cpu" ]]; then
  mode=cpu
  export JAX_PLATFORMS=cpu
  out=benchmarks/results/accelerator_check_cpu
else
  out=benchmarks/results/accelerator_check
fi
mkdir -p "$out"
log="$out/log.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
# The project's venv where it exists, else $PYTHON or python3 (a lent machine's image holds jax,
# flax, optax and orbax but not ml_collections or tensorflow-datasets: carry those as wheels,
# .library/device/README.md, and install them before running this script).
python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
failures=0

step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local command="$*"
  say "== $name (limit ${limit}s): ${command:0:160}"
  local begin=$(date +%s)
  timeout "$limit" "$@" >> "$log" 2>&1
  local status=$?
  say "== $name: exit $status after $(( $(date +%s) - begin ))s"
  (( status == 0 )) || failures=$((failures + 1))
}

step devices 60 $python -c "
import json, sys, jax
devices = jax.devices()
info = {'backend': jax.default_backend(), 'devices': [str(d) for d in devices],
        'kinds': sorted({d.device_kind for d in devices}), 'jax': jax.__version__}
print(json.dumps(info))
open('$out/devices.json', 'w').write(json.dumps(info, indent=2) + '\n')
sys.exit(0 if '$mode' == 'cpu' or info['backend'] != 'cpu' else 'no accelerator found')
"
if [[ $mode == accelerator && $failures -gt 0 ]]; then
  say "no accelerator (see $log): nothing else to check; the CPU's dry run is --cpu"
  exit 1
fi
# Data-axis sizes that divide the benchmark's batch of 200, up to the device count.
data_sizes=$($python -c "import json; n = len(json.load(open('$out/devices.json'))['devices']); \
print(','.join(str(d) for d in range(1, n + 1) if 200 % d == 0))" 2>/dev/null || echo 1)

dataset=fashion_mnist
fashion_dir=${FASHION_MNIST_DIR:-data/fashion-mnist}
# The dataset where it is (a cache, tfds's data dir, Debian's package), else from $fashion_dir.
if ! timeout 60 $python -c "
from bnreg.data import load_dataset
try:
    load_dataset('fashion_mnist', download=False)
except Exception:
    load_dataset('fashion_mnist', manual_dir='$fashion_dir', download=False)
" >> "$log" 2>&1; then
  dataset=none
  say "Fashion-MNIST is not here (no Debian package, no $fashion_dir): synthetic data, no BN study"
fi
synthetic=()
[[ $dataset == none ]] && synthetic=(--synthetic)

if [[ $mode == cpu ]]; then
  study=(--steps 300 --seeds 0)
  dropout=(--steps 20 --repeats 1)
  parallel=(--steps 20 --repeats 1 --data 1,2 --devices 2)
  limits=(240 120 120)
else
  study=(--steps 50000 --seeds 0,1,2)
  dropout=(--steps 500 --repeats 3)
  parallel=(--steps 200 --repeats 3 --data "$data_sizes")
  limits=(150 110 80)  # with the devices' and the dataset's 60 s each: at most 7 min 40 s
fi

if [[ $dataset != none ]]; then
  step bn_study_main_phase "${limits[0]}" $python -m benchmarks.bn_mnist_study "${study[@]}" \
    --variants engine --torch-threads '' --out "$out"
fi
step dropout_throughput "${limits[1]}" $python -m benchmarks.dropout_throughput "${dropout[@]}" \
  "${synthetic[@]}" --out "$out"
step data_parallel "${limits[2]}" $python -m benchmarks.data_parallel "${parallel[@]}" \
  "${synthetic[@]}" --out "$out"

say "accelerator check ($mode): $failures step(s) failed, $(( $(date +%s) - started ))s in all; results in $out"
exit $(( failures > 0 ))
