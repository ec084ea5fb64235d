"""Data-parallel training steps/s of the dropout paper's 3×1024 MLP: one member's batch split
over the ``data`` axis of a mesh (``config.mesh.data``), against the same member on one device.

The network and training are ``benchmarks.dropout_throughput``'s row (a) — 784-1024-1024-1024-10
ReLU, dropout 0.2 / 0.5, max-norm 3, momentum SGD, Fashion-MNIST (``--synthetic``: its
binarized-MNIST-shaped stand-in) — at batch ``--batch`` (default 200). Row ``data=D`` is
``bnreg.engine.build`` with ``mesh.members=1, mesh.data=D``, trained by ``Engine.train`` in
chunks, as ``train_and_evaluate`` does; ``data=1`` is the one-device run. The rows take turns,
round robin (``benchmarks.dropout_throughput.round_robin``), so every row sees the same load;
a rate is the median turn, and the speed-up ``data=D / data=1`` is shown beside it with the
median of the per-round ratios.

On a CPU the script gives XLA ``--devices`` host devices (default 2, the machine's cores: a
forced host device is a share of the same cores, so the cores bound the speed-up); on an
accelerator it uses the devices there are, and ``--data`` lists the data-axis sizes to time.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.data_parallel                      # 3 rounds of 200 steps
  .venv/bin/python -m benchmarks.data_parallel --steps 20 --repeats 1 --synthetic --out /tmp/dp

Results: ``<out>/data_parallel.json`` (every turn) and ``.md``, ``--out`` defaulting to
``benchmarks/results``.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from benchmarks import common

RESULTS_NAME = "data_parallel"
BATCH_SIZE = 200


def main() -> None:
    parser = common.round_robin_arguments(__doc__.split("\n\n")[0], steps=200,
                                          torch=False)
    parser.add_argument("--batch", type=int, default=BATCH_SIZE, help="the member's batch")
    parser.add_argument("--data", default="1,2", help="data-axis sizes to time, e.g. 1,2,4")
    parser.add_argument("--devices", type=int, default=2, help="host devices on a CPU")
    args = parser.parse_args()

    import jax

    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_num_cpu_devices", args.devices)
    from benchmarks import dropout_throughput as dropout
    from bnreg.config import override

    machine = common.machine_load()  # the load before the run
    data = dropout.synthetic_run_data() if args.synthetic else None
    sizes = [int(size) for size in args.data.split(",")]
    chunk = min(dropout.CHUNK_STEPS, args.steps)
    runners = {}
    for size in sizes:
        config = override(dropout.engine_config(dropout=True, num_steps=args.steps), {
            "batch_size": args.batch, "mesh.members": 1, "mesh.data": size})
        runners[f"data={size}"] = dropout.engine_runner(config, data, chunk).run
    for run in runners.values():  # compile and warm up
        run(chunk)
    turns = dropout.round_robin(runners, args.steps, args.repeats)
    result: dict[str, Any] = {
        "batch_size": args.batch,
        "steps_per_turn": args.steps,
        "repeats": args.repeats,
        "devices": [str(device) for device in jax.devices()],
        "backend": jax.default_backend(),
        "data": "synthetic" if args.synthetic else dropout.DATASET,
        "machine": machine,
        "rows": {name: dropout.summarize(name, row, args.steps) for name, row in turns.items()},
        "per_round_speedup": {name: dropout.per_round_ratio(turns, name, "data=1")
                              for name in turns if name != "data=1"},
    }
    common.write_results(args.out / RESULTS_NAME, result, report)


def report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    base = rows.get("data=1", {}).get("rate")
    table = []
    for name, row in rows.items():
        speedup = result["per_round_speedup"].get(name)
        table.append([
            name, f"{row['rate']:.1f}", f"{row['slowest']:.1f}–{row['fastest']:.1f}",
            f"{row['rate'] / base:.2f}×" if base and name != "data=1" else "—",
            f"{speedup['median']:.2f}× ({speedup['min']:.2f}–{speedup['max']:.2f})"
            if speedup else "—",
            f"{row['cores_used']:.2f}",
        ])
    turn_seconds = [t["seconds"] for row in rows.values() for t in row["turns"]]
    return "\n".join([
        f"# Data-parallel steps/s: the 3×1024 dropout MLP, batch {result['batch_size']}",
        "",
        f"{result['backend']} devices: {', '.join(result['devices'])}; data: {result['data']}; "
        f"{result['repeats']} rounds of {result['steps_per_turn']} steps per row (median turn "
        f"{statistics.median(turn_seconds):.1f} s); load before/after "
        f"{result['machine']['loadavg']} / {result['loadavg_after']}.",
        "",
        common.markdown_table(
            ["row", "steps/s (median)", "range", "vs data=1", "per-round ratio (min–max)",
             "cores busy"], table),
        "",
        "Row `data=D`: one member, its batch split over D devices (`mesh.data=D`); gradients "
        "and nothing else are reduced across them (the net has no BN).",
    ])


if __name__ == "__main__":
    main()
