"""Data-parallel training steps/s of the dropout paper's 3×1024 MLP: one member's batch split
over the ``data`` axis of a mesh (``config.mesh.data``), against the same member on one device.

The network and training are ``benchmarks.dropout_throughput``'s row (a) — 784-1024-1024-1024-10
ReLU, dropout 0.2 / 0.5, max-norm 3, momentum SGD, Fashion-MNIST (``--synthetic``: a
binarized-MNIST-shaped stand-in) — at batch ``--batch`` (default 200). Row ``data=D`` is
``bnreg.engine.build`` with ``mesh.members=1, mesh.data=D``, trained by ``Engine.train``;
``data=1`` is the one-device run. The rows take turns (``benchmarks.runner``); the speed-up
``data=D / data=1`` is the ratio of the medians and the median of the per-round ratios.

On a CPU the script gives XLA ``--devices`` host devices (default 2, the machine's cores: a
forced host device is a share of the same cores, so the cores bound the speed-up); on an
accelerator it uses the devices there are, and ``--data`` lists the data-axis sizes to time.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.data_parallel                      # 3 rounds of 200 steps
  .venv/bin/python -m benchmarks.data_parallel --smoke --out /tmp/smoke   # seconds

Results: ``<out>/data_parallel.json`` (every turn) and ``.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from benchmarks import common, report, runner

NAME = "data_parallel"
SMOKE = {"steps": 4, "repeats": 2, "width": 32, "batch": 8, "examples": 1000, "data": "1,2"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=200)
    parser.add_argument("--batch", type=int, default=200, help="the member's batch")
    parser.add_argument("--data", default="1,2", help="data-axis sizes to time, e.g. 1,2,4")
    parser.add_argument("--devices", type=int, default=2, help="host devices on a CPU")
    parser.add_argument("--width", type=int, default=1024, help="hidden units")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    args = common.parse(parser, argv, SMOKE)

    import jax

    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        jax.config.update("jax_num_cpu_devices", args.devices)
    from bnreg.config import override
    from bnreg.engine import load_run_data

    config = common.dropout_mlp_config(dropout=True, num_steps=args.steps,
                                       hidden_sizes=(args.width,) * 3)
    data = (common.synthetic_run_data(args.examples, 1000) if args.synthetic
            else load_run_data(config))
    chunk = min(500, args.steps)
    peers: dict[str, Any] = {}
    for size in (int(size) for size in args.data.split(",")):
        sized = override(config, {"batch_size": args.batch, "mesh.members": 1, "mesh.data": size})
        peers[f"data={size}"] = (lambda sized=sized: runner.engine_peer(sized, data=data,
                                                                        chunk=chunk))
    result = report.start(NAME, f"Data-parallel steps/s: the 3×{args.width} dropout MLP, batch "
                          f"{args.batch}", batch_size=args.batch, steps=args.steps,
                          repeats=args.repeats, backend=jax.default_backend(),
                          devices=[str(device) for device in jax.devices()], data=data.source)
    result["measurement"] = measurement = runner.measure(
        peers, args.steps, args.repeats, ratios=[(name, "data=1") for name in peers])
    rows, ratios = measurement["rows"], measurement["ratios"]
    result["text"] = [
        f"{result['backend']} devices: {', '.join(result['devices'])}; data: {result['data']}; "
        f"{args.repeats} rounds of {args.steps} steps per row. Row `data=D`: one member, its "
        "batch split over D devices (`mesh.data=D`); gradients and nothing else are reduced "
        "across them (the net has no BN)."]
    result["tables"] = [report.table([
        ("row", "row", "{}"), ("rate", "steps/s (median)", "{:.1f}"),
        ("turns", "range", "{:.1f}–{:.1f}"), ("speedup", "vs data=1", "{:.2f}×"),
        ("per_round", "per-round ratio (min–max)", "{:.2f}× ({:.2f}–{:.2f})"),
        ("cores", "cores busy", "{:.2f}")], [
        {"row": name, "rate": row["rate"], "turns": [row["slowest"], row["fastest"]],
         "cores": row["cores_used"],
         **({"speedup": ratio["of_medians"],
             "per_round": [ratio["median"], ratio["min"], ratio["max"]]}
            if (ratio := ratios.get(f"{name}/data=1")) and name != "data=1" else {})}
        for name, row in rows.items()])]
    report.finish(result, args.out, args.name or NAME)


if __name__ == "__main__":
    main()
