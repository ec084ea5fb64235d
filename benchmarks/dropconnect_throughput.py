"""Training throughput and memory of DropConnect with a fresh mask per example (Wan et al.
2013), the paper's 784-800-800-10 MNIST net: bnreg against dropout and PyTorch eager, side by
side.

The net: 784-800-800-10, ReLU hidden units, DropConnect (drop rate 0.5, retain p = 0.5) on both
hidden layers' weights and biases, a plain output layer, softmax cross-entropy, SGD at lr 0.1
with momentum 0.9, batches of 100 from shuffled epochs of Fashion-MNIST's 60000 training images
(``--synthetic``: a binarized-MNIST-shaped stand-in). Rows:

(a) bnreg's engine, a mask per weight per example (``model.dropconnect=0.5``, the paper's
    training), 32-bit draws (``jax.random.bernoulli``);
(a″) the same with 16-bit draws (``model.dropconnect_mask_bits=16``: p resolved to 2⁻¹⁶);
(b) bnreg, one mask per batch (``model.dropconnect_per_example=False``), 16-bit draws;
(c) bnreg, dropout instead (hidden drop rate 0.5 on the units): the cost of a unit mask;
(d) PyTorch eager on CPU, ``torch.set_num_threads(2)``: per example, the masks sampled as
    ``torch.rand(B, in + 1, out) < p`` (the bias a row of a constant input), the masked weights
    ``(W ⊙ M_b) / p`` and one batched matmul (``torch.bmm``), autograd for the backward.

Memory of one step: bnreg's is XLA's compiled temporary size of a one-step chunk (the buffers
alive at once besides the state and the data), PyTorch's the growth of the process's peak
resident memory over its first step (it runs before anything else grows it). Each is divided by
the mask entries of a step (``B × Σ (in + 1) × out``) to give bytes per weight per example;
the target is at most 1.

The rows take turns, round robin (``benchmarks.dropout_throughput.round_robin``), ``--repeats``
rounds of ``--steps`` steps; a rate is the median turn. Target: (a″) ≥ 2 × (d).

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropconnect_throughput            # 3 rounds of 20 steps
  .venv/bin/python -m benchmarks.dropconnect_throughput --steps 4 --repeats 1 --synthetic \\
      --out /tmp/dropconnect

Results: ``<out>/dropconnect_throughput.json`` (every turn) and ``.md``.
"""

from __future__ import annotations

import itertools
import resource
from typing import Any

import numpy as np

from benchmarks import common

RESULTS_NAME = "dropconnect_throughput"
SIZES = (784, 800, 800, 10)
BATCH_SIZE = 100
RATE = 0.5
LEARNING_RATE = 0.1
MOMENTUM = 0.9
TORCH_THREADS = 2
TARGET_TORCH = 2.0
TARGET_BYTES = 1.0

ROWS = {
    "dropconnect": "(a) bnreg, DropConnect mask per example, 32-bit draws",
    "dropconnect_16bit": "(a″) bnreg, DropConnect mask per example, 16-bit draws",
    "dropconnect_per_batch": "(b) bnreg, DropConnect mask per batch, 16-bit draws",
    "dropout": "(c) bnreg, dropout 0.5 on the hidden units",
    "torch": "(d) PyTorch eager, mask per example, torch.bmm, 2 threads",
}
# The DropConnect layers' weights and biases, one mask entry each per example.
MASK_ENTRIES = BATCH_SIZE * sum((a + 1) * b for a, b in itertools.pairwise(SIZES[:3]))


def config_of(row: str, num_steps: int, dataset: str) -> Any:
    from bnreg.config import default_config, override

    dropconnect = row.startswith("dropconnect")
    return override(default_config(), {
        "dataset": dataset, "model.hidden_sizes": SIZES[1:-1], "model.activation": "relu",
        "model.kernel_init": "lecun_normal",
        "model.dropconnect": RATE if dropconnect else 0.0,
        "model.hidden_dropout": 0.0 if dropconnect else RATE,
        "model.dropconnect_mask_bits": 32 if row == "dropconnect" else 16,
        "model.dropconnect_per_example": row != "dropconnect_per_batch",
        "optimizer.learning_rate": LEARNING_RATE, "optimizer.momentum": MOMENTUM,
        "batch_size": BATCH_SIZE, "num_steps": num_steps, "eval_every": num_steps,
        "checkpoint_every": 0, "progress": False, "probe.layers": (),
    })


def step_temp_bytes(built: Any) -> int:
    """XLA's temporary bytes of a one-step chunk of ``built`` (an Engine)."""
    state, order = built.init(), built.empty_order()
    arrays = built._arrays
    compiled = built._chunk.lower(state, order, arrays["train_images"], arrays["train_labels"],
                                  arrays["subsets"], 1).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def torch_runner(torch: Any, images: np.ndarray, labels: np.ndarray):
    """Per-example DropConnect in PyTorch eager: returns ``(run, peak_growth_bytes)`` where
    ``run(n)`` trains n steps and the peak is measured over the first step."""
    torch.manual_seed(0)
    keep = 1.0 - RATE
    weights = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        weight = torch.randn(fan_in + 1, fan_out) / fan_in**0.5  # the last row is the bias
        weight[-1] = 0.0
        weights.append(weight.requires_grad_())
    optimizer = torch.optim.SGD(weights, lr=LEARNING_RATE, momentum=MOMENTUM)
    torch_images = torch.from_numpy(np.ascontiguousarray(images.reshape(len(images), -1)))
    torch_labels = torch.from_numpy(labels).long()
    generator = np.random.default_rng(0)

    def forward(x):
        for index, weight in enumerate(weights):
            x = torch.cat([x, torch.ones(len(x), 1)], dim=1)
            if index < len(weights) - 1:
                masks = torch.rand(len(x), *weight.shape) < keep
                x = torch.relu(torch.bmm(x[:, None, :], weight * masks / keep)[:, 0])
            else:
                x = x @ weight
        return x

    def run(num_steps: int) -> None:
        torch.set_num_threads(TORCH_THREADS)
        for _ in range(num_steps):
            batch = torch.from_numpy(generator.integers(0, len(images), BATCH_SIZE))
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(forward(torch_images[batch]),
                                                     torch_labels[batch])
            loss.backward()
            optimizer.step()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    run(1)
    return run, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def main() -> None:
    parser = common.round_robin_arguments(__doc__.split("\n\n")[0], steps=20,
                                          torch=True)
    args = parser.parse_args()

    from benchmarks import dropout_throughput as dropout

    machine = common.machine_load()
    torch, torch_where = dropout.import_torch(args.torch_path)
    data = dropout.synthetic_run_data() if args.synthetic else None
    memory: dict[str, float] = {}
    runners = {}
    if torch is not None:  # first, so that its peak memory is its own
        from bnreg.data import load_dataset

        train = data.train if data else load_dataset(dropout.DATASET).train
        runners["torch"], memory["torch"] = torch_runner(torch, train.images, train.labels)
    for row in ROWS:
        if row == "torch":
            continue
        config = config_of(row, args.steps, dropout.DATASET)
        engine_row = dropout.engine_runner(config, data, args.steps)
        memory[row] = step_temp_bytes(engine_row.engine)
        runners[row] = engine_row.run
    for name, run in runners.items():  # compile and warm up
        if name != "torch":
            run(args.steps)
    turns = dropout.round_robin(runners, args.steps, args.repeats)
    result = {
        "steps_per_turn": args.steps, "repeats": args.repeats, "batch_size": BATCH_SIZE,
        "mask_entries_per_step": MASK_ENTRIES, "machine": machine,
        "torch": torch.__version__ if torch else torch_where,
        "data": "synthetic" if args.synthetic else dropout.DATASET,
        "rows": {name: dropout.summarize(name, row, args.steps) for name, row in turns.items()},
        "step_memory_bytes": memory,
        "per_round_vs_torch": {name: dropout.per_round_ratio(turns, name, "torch")
                               for name in turns if name != "torch"},
    }
    common.write_results(args.out / RESULTS_NAME, result, report)


def report(result: dict[str, Any]) -> str:
    rows, memory = result["rows"], result["step_memory_bytes"]
    torch_rate = rows.get("torch", {}).get("rate")
    table = []
    for name, description in ROWS.items():
        if name not in rows:
            continue
        row, versus = rows[name], result["per_round_vs_torch"].get(name)
        bytes_per_entry = memory[name] / result["mask_entries_per_step"]
        table.append([
            description, f"{row['rate']:.2f}", f"{row['slowest']:.2f}–{row['fastest']:.2f}",
            f"{row['rate'] / torch_rate:.2f}× ({versus['min']:.2f}–{versus['max']:.2f})"
            if torch_rate and versus else "—",
            f"{memory[name] / 2**20:.0f} MiB", f"{bytes_per_entry:.2f}",
        ])
    best = rows.get("dropconnect_16bit", {}).get("rate")
    verdict = (f"(a″)/(d) = {best / torch_rate:.2f}× against the target {TARGET_TORCH}×: "
               f"{'met' if best / torch_rate >= TARGET_TORCH else 'not met'}"
               if best and torch_rate else "PyTorch row missing: no ratio")
    memory_verdict = ("mask memory: (a″) "
                      f"{memory['dropconnect_16bit'] / result['mask_entries_per_step']:.2f} "
                      f"bytes per weight per example against ≤ {TARGET_BYTES}: " +
                      ("met" if memory["dropconnect_16bit"] / result["mask_entries_per_step"]
                       <= TARGET_BYTES else "not met"))
    return "\n".join([
        "# DropConnect per example: the 784-800-800-10 net, batch 100, steps/s",
        "",
        f"data: {result['data']}; torch: {result['torch']}; {result['repeats']} rounds of "
        f"{result['steps_per_turn']} steps per row; load before/after "
        f"{result['machine']['loadavg']} / {result['loadavg_after']}; a step holds "
        f"{result['mask_entries_per_step']:,} mask entries.",
        "",
        common.markdown_table(["row", "steps/s (median)", "range", "vs PyTorch (per round)",
                               "step memory", "bytes / weight / example"], table),
        "",
        f"- {verdict}",
        f"- {memory_verdict}",
    ])


if __name__ == "__main__":
    main()
