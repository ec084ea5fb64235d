"""Training throughput of the small Inception-style BN convnet (``bnreg.models.Inception``) on
28×28 images: bnreg against PyTorch eager, side by side, with GFLOP/s against the convolutions'
FLOPs.

The net (``--net default``): a 3×3 stem of 32 channels, two inception modules ((16, 16, 24, 8,
12, 8) and (32, 24, 48, 12, 24, 16): 1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3; 3×3 max-pool → 1×1), a 2×2
max-pool after the first, global average pooling, a dense softmax layer; BN before every ReLU
(the convolutions without bias), SGD with momentum 0.9 at lr 0.01, batches of 32 (the BN paper's
Inception batch) from shuffled epochs of Fashion-MNIST (``--synthetic``: a stand-in of the same
shape). ``--net study``: the BN-acceleration study's net instead
(``experiments.bn_accelerate``'s full config: a stem of 16 channels and a 2×2 max-pool after it,
modules (8, 8, 12, 4, 6, 4) and (16, 12, 24, 6, 12, 8)), results in
``convnet_throughput_study``. Rows:

(a) bnreg's engine: ``bnreg.engine.build`` with ``model.name="inception"``, ``Engine.train`` in
    chunks of ``--steps`` (one ``lax.scan``);
(a′) the same with ``unroll_steps=True``, ``Engine.train`` in calls of ``UNROLLED_STEPS``
    unrolled steps (XLA:CPU runs convolutions several times slower inside a loop);
(b) PyTorch eager on CPU, ``torch.set_num_threads(2)``, the same net in ``torch.nn``
    (``Conv2d(bias=False) → BatchNorm2d → ReLU``, NCHW), ``torch.optim.SGD(momentum=0.9)``.

GFLOP/s counts the convolutions' and the dense layer's multiply-adds analytically (2 FLOPs
each): the forward's, times 3 for forward + the two backward products (the input gradient and
the weight gradient; the stem's input gradient is counted too, a 1-channel slip). BN, pooling
and the element-wise work are not counted. The rows take turns, round robin
(``benchmarks.dropout_throughput.round_robin``); a rate is the median turn. Target: (a) ≥ 1.5 ×
(b).

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.convnet_throughput              # 3 rounds of 100 steps
  .venv/bin/python -m benchmarks.convnet_throughput --net study  # the study's net
  .venv/bin/python -m benchmarks.convnet_throughput --steps 10 --repeats 1 --synthetic \\
      --out /tmp/convnet

Results: ``<out>/convnet_throughput[_study].json`` (every turn) and ``.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import common

RESULTS_NAME = "convnet_throughput"
BATCH_SIZE = 32
LEARNING_RATE = 0.01
MOMENTUM = 0.9
TORCH_THREADS = 2
TARGET_TORCH = 1.5
UNROLLED_STEPS = 5  # steps per call of row (a′)
IMAGE = (28, 28, 1)


NETS = ("default", "study")


def net_model(net: str) -> Any:
    """The model config of ``net``: ``"default"`` (``bnreg.config``) or ``"study"``
    (``experiments.bn_accelerate``'s full config)."""
    if net == "study":
        from experiments import bn_accelerate

        return bn_accelerate.get_config().model
    from bnreg.config import default_config

    return default_config().model


def forward_macs(model: Any) -> int:
    """Multiply-adds of one image's forward pass through the convolutions and the dense layer."""
    stem = model.inception_stem
    side, channels = IMAGE[0], IMAGE[2]
    macs = side * side * 9 * channels * stem
    channels = stem
    if model.inception_stem_pool:
        side //= 2
    for index, (b1, b3r, b3, b5r, b5, proj) in enumerate(model.inception_modules):
        pixels = side * side
        macs += pixels * (channels * (b1 + b3r + b5r + proj) + 9 * b3r * b3 + 9 * b5r * b5
                          + 9 * b5 * b5)
        channels = b1 + b3 + b5 + proj
        if index in model.inception_pool_after:
            side //= 2
    return macs + channels * 10


def step_flops(model: Any) -> int:
    return 3 * 2 * forward_macs(model) * BATCH_SIZE


def engine_config(model: Any, num_steps: int, dataset: str, *, unroll: bool = False) -> Any:
    from bnreg.config import default_config, override

    return override(default_config(), {
        **{f"model.{key}": model[key] for key in ("inception_stem", "inception_stem_pool",
                                                  "inception_modules", "inception_pool_after")},
        "unroll_steps": unroll, "steps_per_call": UNROLLED_STEPS if unroll else 0,
        "dataset": dataset, "model.name": "inception", "model.norm": "batch",
        "model.activation": "relu", "model.kernel_init": "he_normal",
        "optimizer.learning_rate": LEARNING_RATE, "optimizer.momentum": MOMENTUM,
        "batch_size": BATCH_SIZE, "num_steps": num_steps, "eval_every": num_steps,
        "checkpoint_every": 0, "progress": False, "probe.layers": (),
    })


def torch_net(torch: Any, model: Any) -> Any:
    """The net of ``model`` (a model config) in ``torch.nn`` (NCHW)."""
    nn = torch.nn
    stem = model.inception_stem

    def conv(cin, cout, size):
        return nn.Sequential(nn.Conv2d(cin, cout, size, padding=size // 2, bias=False),
                             nn.BatchNorm2d(cout, momentum=0.01), nn.ReLU())

    class Module(nn.Module):
        def __init__(self, cin, b1, b3r, b3, b5r, b5, proj):
            super().__init__()
            self.b1 = conv(cin, b1, 1)
            self.b3 = nn.Sequential(conv(cin, b3r, 1), conv(b3r, b3, 3))
            self.b5 = nn.Sequential(conv(cin, b5r, 1), conv(b5r, b5, 3), conv(b5, b5, 3))
            self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(cin, proj, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)

    layers, channels = [conv(IMAGE[2], stem, 3)], stem
    if model.inception_stem_pool:
        layers.append(nn.MaxPool2d(2, 2))
    for index, spec in enumerate(model.inception_modules):
        layers.append(Module(channels, *spec))
        channels = spec[0] + spec[2] + spec[4] + spec[5]
        if index in model.inception_pool_after:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


def torch_runner(torch: Any, net_config: Any, images: np.ndarray, labels: np.ndarray):
    torch.manual_seed(0)
    model = torch_net(torch, net_config).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    torch_images = torch.from_numpy(np.ascontiguousarray(
        images.reshape(-1, *IMAGE).transpose(0, 3, 1, 2)))
    torch_labels = torch.from_numpy(labels).long()
    generator = np.random.default_rng(0)

    def run(num_steps: int) -> None:
        torch.set_num_threads(TORCH_THREADS)
        for _ in range(num_steps):
            batch = torch.from_numpy(generator.integers(0, len(images), BATCH_SIZE))
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(torch_images[batch]),
                                                     torch_labels[batch])
            loss.backward()
            optimizer.step()

    return run


def main() -> None:
    parser = common.round_robin_arguments(__doc__.split("\n\n")[0], steps=100,
                                          torch=True)
    parser.add_argument("--net", choices=NETS, default="default",
                        help="the default modules, or the BN-acceleration study's net")
    args = parser.parse_args()
    model = net_model(args.net)

    from benchmarks import dropout_throughput as dropout

    machine = common.machine_load()
    torch, torch_where = dropout.import_torch(args.torch_path)
    data = dropout.synthetic_run_data() if args.synthetic else None
    bnreg_row = dropout.engine_runner(engine_config(model, args.steps, dropout.DATASET), data,
                                      args.steps)
    unrolled = dropout.engine_runner(
        engine_config(model, args.steps, dropout.DATASET, unroll=True), data, UNROLLED_STEPS)
    runners = {"bnreg": bnreg_row.run, "bnreg_unrolled": unrolled.run}
    if torch is not None:
        train = bnreg_row.engine.data.train
        runners["torch"] = torch_runner(torch, model, train.images, train.labels)
    for run in runners.values():  # compile and warm up
        run(args.steps)
    turns = dropout.round_robin(runners, args.steps, args.repeats)
    result = {
        "steps_per_turn": args.steps, "repeats": args.repeats, "batch_size": BATCH_SIZE,
        "net": args.net, "step_gflop": step_flops(model) / 1e9, "machine": machine,
        "torch": torch.__version__ if torch else torch_where,
        "data": "synthetic" if args.synthetic else dropout.DATASET,
        "rows": {name: dropout.summarize(name, row, args.steps) for name, row in turns.items()},
        "per_round_vs_torch": {name: dropout.per_round_ratio(turns, name, "torch")
                               for name in ("bnreg", "bnreg_unrolled")},
    }
    name = RESULTS_NAME + ("_study" if args.net == "study" else "")
    common.write_results(args.out / name, result, report)


def report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    table = [[name, f"{row['rate']:.1f}", f"{row['slowest']:.1f}–{row['fastest']:.1f}",
              f"{row['rate'] * result['step_gflop']:.1f}", f"{row['cores_used']:.2f}"]
             for name, row in rows.items()]
    lines = [
        f"# The Inception-style BN convnet ({result['net']} net), batch 32, "
        "28×28: training steps/s", "",
        f"data: {result['data']}; torch: {result['torch']}; {result['repeats']} rounds of "
        f"{result['steps_per_turn']} steps per row; {result['step_gflop']:.3f} GFLOP per step "
        f"(convolutions and the dense layer, forward + backward); load before/after "
        f"{result['machine']['loadavg']} / {result['loadavg_after']}.", "",
        common.markdown_table(["row", "steps/s (median)", "range", "GFLOP/s", "cores busy"],
                              table), "",
    ]
    for name, versus in result["per_round_vs_torch"].items():
        if versus and "torch" in rows:
            ratio = rows[name]["rate"] / rows["torch"]["rate"]
            lines.append(f"- {name} / PyTorch eager = {ratio:.2f}× (per round "
                         f"{versus['min']:.2f}–{versus['max']:.2f}×) against the target "
                         f"{TARGET_TORCH}×: {'met' if ratio >= TARGET_TORCH else 'not met'}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
