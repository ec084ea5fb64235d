"""Training throughput and memory of DropConnect with a fresh mask per example (Wan et al.
2013), the paper's 784-800-800-10 MNIST net: bnreg against dropout and PyTorch eager, side by
side.

The net: 784-800-800-10, ReLU hidden units, DropConnect (drop rate 0.5) on both hidden layers'
weights and biases, a plain output layer, softmax cross-entropy, SGD at lr 0.1 with momentum
0.9, batches of 100 from shuffled epochs of Fashion-MNIST's training images (``--synthetic``: a
binarized-MNIST-shaped stand-in). Rows:

(a) bnreg's engine, a mask per weight per example (``model.dropconnect=0.5``), 32-bit draws;
(a″) the same with 16-bit draws (``model.dropconnect_mask_bits=16``: p resolved to 2⁻¹⁶);
(b) bnreg, one mask per batch (``model.dropconnect_per_example=False``), 16-bit draws;
(c) bnreg, dropout instead (hidden drop rate 0.5 on the units): the cost of a unit mask;
(d) PyTorch eager, 2 threads (``benchmarks.torch_peers.dropconnect_peer``: the masks as
    ``torch.rand(B, in + 1, out) < p``, one ``torch.bmm``, autograd for the backward);
(e) bnreg, (a″) with ``--members`` seeds vmapped in one program, as a study's run trains them:
    its mask entries/s against (a″)'s is what a study keeps of the layer's speed (target ≥ 80%).

``--width 100 --image-pool 2`` gives the DropConnect study's nets (196-100-100-10,
``experiments/dropconnect.py``).

Memory of one step: bnreg's is XLA's temporary size of a one-step chunk
(``Engine.lower_train(...).compile().memory_analysis()``: the buffers alive at once besides the
state and the data), PyTorch's the growth of the process's peak resident memory over its first
step. Each divided by the mask entries of a step (``B × Σ (in + 1) × out``) gives bytes per
weight per example; target ≤ 1. The rows take turns (``benchmarks.runner``). Targets: (a″) ≥ 5 ×
(d); (e) ≥ 80% of (a″)'s mask entries/s.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropconnect_throughput            # 3 rounds of 20 steps
  .venv/bin/python -m benchmarks.dropconnect_throughput --width 100 --image-pool 2 \
      --steps 100 --name dropconnect_throughput_study               # the study's nets
  .venv/bin/python -m benchmarks.dropconnect_throughput --smoke --out /tmp/smoke   # seconds

Results: ``<out>/dropconnect_throughput.json`` (every turn) and ``.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import common, report, runner, torch_peers

NAME = "dropconnect_throughput"
WIDTH = 800
BATCH_SIZE = 100
RATE = 0.5
LEARNING_RATE = 0.1
MOMENTUM = 0.9
TARGET_TORCH = 5.0
TARGET_BYTES = 1.0
TARGET_MEMBERS = 0.8
SMOKE = {"steps": 1, "repeats": 2, "width": 32, "examples": 1000,
         "rows": "dropconnect_16bit,dropout,dropconnect_members"}

ROWS = {
    "dropconnect": "(a) bnreg, DropConnect mask per example, 32-bit draws",
    "dropconnect_16bit": "(a″) bnreg, DropConnect mask per example, 16-bit draws",
    "dropconnect_per_batch": "(b) bnreg, DropConnect mask per batch, 16-bit draws",
    "dropout": "(c) bnreg, dropout 0.5 on the hidden units",
    "torch": "(d) PyTorch eager, mask per example, torch.bmm, 2 threads",
    "dropconnect_members": "(e) bnreg, (a″) with the members of a study's run vmapped",
}


def config_of(row: str, num_steps: int, width: int, *, image_pool: int = 1,
              members: int = 1) -> Any:
    from bnreg.config import default_config, override

    dropconnect = row.startswith("dropconnect")
    return override(default_config(), {
        "image_pool": image_pool,
        "sweep.seed": tuple(range(members if row == "dropconnect_members" else 1)),
        "dataset": common.DATASET, "model.hidden_sizes": (width, width),
        "model.activation": "relu", "model.kernel_init": "lecun_normal",
        "model.dropconnect": RATE if dropconnect else 0.0,
        "model.hidden_dropout": 0.0 if dropconnect else RATE,
        "model.dropconnect_mask_bits": 32 if row == "dropconnect" else 16,
        "model.dropconnect_per_example": row != "dropconnect_per_batch",
        "optimizer.learning_rate": LEARNING_RATE, "optimizer.momentum": MOMENTUM,
        "batch_size": BATCH_SIZE, "num_steps": num_steps, "eval_every": num_steps,
        "checkpoint_every": 0, "progress": False, "probe.layers": (),
    })


def step_temp_bytes(peer: runner.Peer) -> int:
    """XLA's temporary bytes of a one-step chunk of the peer's engine."""
    built = peer.engine
    lowered = built.lower_train(built.init(), built.empty_order(), 1)
    return lowered.compile().memory_analysis().temp_size_in_bytes


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=20)
    parser.add_argument("--width", type=int, default=WIDTH, help="hidden units")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    parser.add_argument("--image-pool", type=int, default=1,
                        help="average-pool the images k×k (config.image_pool)")
    parser.add_argument("--members", type=int, default=3, help="members of row (e)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows of {list(ROWS)}")
    args = common.parse(parser, argv, SMOKE)
    if set(args.rows.split(",")) - set(ROWS):
        parser.error(f"--rows must name rows of {list(ROWS)}.")
    from bnreg.engine import load_run_data

    def config(row: str) -> Any:
        return config_of(row, args.steps, args.width, image_pool=args.image_pool,
                         members=args.members)

    torch, where = torch_peers.load(args.torch_path) if args.torch else (None, "off (--smoke)")
    data = (common.synthetic_run_data(args.examples, 1000) if args.synthetic
            else load_run_data(config("dropconnect")))
    inputs = int(np.prod(data.image_shape))
    sizes = (inputs, args.width, args.width, common.NUM_CLASSES)
    entries = BATCH_SIZE * sum((a + 1) * b for a, b in itertools.pairwise(sizes[:3]))
    peers: dict[str, Any] = {}
    memory: dict[str, int] = {}
    if torch is not None and "torch" in args.rows.split(","):  # first: its peak is its own
        peers["torch"], memory["torch"] = torch_peers.dropconnect_peer(
            torch, data.train.images, data.train.labels, sizes=sizes, rate=RATE,
            lr=LEARNING_RATE, momentum=MOMENTUM, batch_size=BATCH_SIZE, thread_count=2)
    for row in ROWS:
        if row != "torch" and row in args.rows.split(","):
            peers[row] = runner.engine_peer(config(row), data=data, chunk=args.steps)
            memory[row] = step_temp_bytes(peers[row])
    net = "-".join(map(str, sizes))
    result = report.start(NAME, f"DropConnect per example: the {net} net, batch {BATCH_SIZE}, "
                          "steps/s", steps=args.steps,
                          repeats=args.repeats, torch=where, data=data.source,
                          mask_entries_per_step=entries, step_memory_bytes=memory)
    result["measurement"] = runner.measure(peers, args.steps, args.repeats,
                                           ratios=[(row, "torch") for row in ROWS])
    rows, ratios = result["measurement"]["rows"], result["measurement"]["ratios"]
    result["text"] = [
        f"Data: {data.source}; PyTorch: {where}. {args.repeats} rounds of {args.steps} steps per "
        f"row; a step holds {entries:,} mask entries. Step memory: bnreg's is XLA's temporary "
        "size of a one-step chunk, PyTorch's the growth of the peak resident memory over its "
        "first step."]
    result["tables"] = [report.table([
        ("row", "row", "{}"), ("rate", "steps/s (median)", "{:.2f}"),
        ("turns", "range", "{:.2f}–{:.2f}"),
        ("torch", "vs PyTorch (per round)", "{:.2f}× ({:.2f}–{:.2f})"),
        ("entries", "mask entries/s", "{:.0f}M"),
        ("memory", "step memory", "{:.0f} MiB"), ("bytes", "bytes / weight / example", "{:.2f}"),
    ], [{"row": label, "rate": rows[name]["rate"],
         "entries": rows[name]["rate"] * entries / 1e6 if name.startswith("dropconnect") else None,
         "turns": [rows[name]["slowest"], rows[name]["fastest"]],
         "torch": [ratio["of_medians"], ratio["min"], ratio["max"]]
         if (ratio := ratios.get(f"{name}/torch")) else None,
         "memory": memory[name] / 2**20,
         "bytes": memory[name] / (entries * (args.members if name == "dropconnect_members"
                                             else 1))}
        for name, label in ROWS.items() if name in rows])]
    bytes_16bit = memory.get("dropconnect_16bit", float("nan")) / entries
    versus = report.ratio_text(ratios.get("dropconnect_16bit/torch"), TARGET_TORCH)
    kept = (rows["dropconnect_members"]["rate"] / rows["dropconnect_16bit"]["rate"]
            if {"dropconnect_members", "dropconnect_16bit"} <= set(rows) else float("nan"))
    result["notes"] = [
        f"(a″) / (d) PyTorch: {versus}.",
        f"(e) / (a″), mask entries/s of {args.members} members in one program against one: "
        f"**{kept:.2f}** against ≥ {TARGET_MEMBERS:g}: "
        f"{'met' if kept >= TARGET_MEMBERS else 'NOT met'}.",
        f"Mask memory of (a″): **{bytes_16bit:.2f}** bytes per weight per example against ≤ "
        f"{TARGET_BYTES:g}: {'met' if bytes_16bit <= TARGET_BYTES else 'NOT met'}.",
    ]
    report.finish(result, args.out, args.name or NAME)


if __name__ == "__main__":
    main()
