"""Training throughput of the small Inception-style BN convnet (``bnreg.models.Inception``) on
28×28 images: bnreg against PyTorch eager, side by side, with GFLOP/s against the convolutions'
FLOPs.

The net (``--net default``): a 3×3 stem of 32 channels, two inception modules ((16, 16, 24, 8,
12, 8) and (32, 24, 48, 12, 24, 16): 1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3; 3×3 max-pool → 1×1), a 2×2
max-pool after the first, global average pooling, a dense softmax layer; BN before every ReLU,
SGD with momentum 0.9 at lr 0.01, batches of 32 from shuffled epochs of Fashion-MNIST
(``--synthetic``: a stand-in of the same shape). ``--net study``: the BN-acceleration study's
net (``experiments.bn_accelerate``'s full config: a stem of 16 channels pooled to 14×14, modules
(8, 8, 12, 4, 6, 4) and (16, 12, 24, 6, 12, 8)), results in ``convnet_throughput_study``;
``--net smoke``: its smoke config's. Rows:

(a) bnreg's engine (``model.name="inception"``), ``Engine.train`` in calls of ``--steps`` (one
    ``lax.scan``);
(a′) the same with ``unroll_steps=True``, calls of ``--unrolled`` (5) unrolled steps (XLA:CPU
    runs convolutions several times slower inside a loop);
(a″) (a′) with the pooling branches' other 3×3 pool (max where the net averages, as the
    study's net does, and the reverse), to show what the choice costs;
(b) PyTorch eager, 2 threads, the same net in ``torch.nn`` (``benchmarks.torch_peers``).

GFLOP/s counts the convolutions' and the dense layer's multiply-adds analytically (2 FLOPs
each), the forward's times 3 for forward + the two backward products. The rows take turns
(``benchmarks.runner``). Target: (a) ≥ 1.5 × (b).

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.convnet_throughput              # 3 rounds of 100 steps
  .venv/bin/python -m benchmarks.convnet_throughput --net study  # the study's net
  .venv/bin/python -m benchmarks.convnet_throughput --smoke --out /tmp/smoke   # seconds

Results: ``<out>/convnet_throughput[_study].json`` (every turn) and ``.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import common, report, runner, torch_peers

NAME = "convnet_throughput"
BATCH_SIZE = 32
LEARNING_RATE = 0.01
MOMENTUM = 0.9
TARGET_TORCH = 1.5
IMAGE = (28, 28, 1)
NETS = ("default", "study", "smoke")
SMOKE = {"steps": 2, "repeats": 2, "net": "smoke", "examples": 500, "unrolled": 2}


def net_model(net: str) -> Any:
    """The model config of ``net``: ``"default"`` (``bnreg.config``), ``"study"`` or
    ``"smoke"`` (``experiments.bn_accelerate``'s full or smoke config)."""
    if net in ("study", "smoke"):
        from experiments import bn_accelerate

        return bn_accelerate.get_config("full" if net == "study" else "smoke").model
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
        macs += side * side * (channels * (b1 + b3r + b5r + proj) + 9 * b3r * b3
                               + 9 * b5r * b5 + 9 * b5 * b5)
        channels = b1 + b3 + b5 + proj
        if index in model.inception_pool_after:
            side //= 2
    return macs + channels * common.NUM_CLASSES


def engine_config(model: Any, num_steps: int, *, unroll: int = 0,
                  branch_pool: str | None = None) -> Any:
    """The engine config of row (a), or of (a′) with ``unroll`` unrolled steps per call, with
    the model's branch pool or ``branch_pool``."""
    from bnreg.config import default_config, override

    return override(default_config(), {
        **{f"model.{key}": model[key] for key in ("inception_stem", "inception_stem_pool",
                                                  "inception_modules", "inception_pool_after")},
        "model.inception_branch_pool": branch_pool or model.inception_branch_pool,
        "unroll_steps": bool(unroll), "steps_per_call": unroll,
        "dataset": common.DATASET, "model.name": "inception", "model.norm": "batch",
        "model.activation": "relu", "model.kernel_init": "he_normal",
        "optimizer.learning_rate": LEARNING_RATE, "optimizer.momentum": MOMENTUM,
        "batch_size": BATCH_SIZE, "num_steps": num_steps, "eval_every": num_steps,
        "checkpoint_every": 0, "progress": False, "probe.layers": (),
    })


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=100)
    parser.add_argument("--net", choices=NETS, default="default",
                        help="the default modules, the BN-acceleration study's net, or its smoke")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    parser.add_argument("--unrolled", type=int, default=5, help="unrolled steps per call (a′)")
    args = common.parse(parser, argv, SMOKE)
    if args.steps % args.unrolled:
        parser.error(f"--steps must be a multiple of --unrolled ({args.unrolled}).")
    from bnreg.engine import load_run_data

    model = net_model(args.net)
    other_pool = {"max": "avg", "avg": "max"}[model.inception_branch_pool]
    torch, where = torch_peers.load(args.torch_path) if args.torch else (None, "off (--smoke)")
    data = (common.synthetic_run_data(args.examples, 1000) if args.synthetic
            else load_run_data(engine_config(model, args.steps)))
    peers: dict[str, Any] = {
        "bnreg": lambda: runner.engine_peer(engine_config(model, args.steps), data=data,
                                            chunk=args.steps),
        "bnreg_unrolled": lambda: runner.engine_peer(
            engine_config(model, args.steps, unroll=args.unrolled), data=data,
            chunk=args.unrolled),
        f"bnreg_unrolled_{other_pool}_pool": lambda: runner.engine_peer(
            engine_config(model, args.steps, unroll=args.unrolled, branch_pool=other_pool),
            data=data, chunk=args.unrolled)}
    if torch is not None:
        peers["torch"] = lambda: torch_peers.inception_peer(
            torch, model, data.train.images, data.train.labels, lr=LEARNING_RATE,
            momentum=MOMENTUM, batch_size=BATCH_SIZE, thread_count=2)
    step_gflop = 3 * 2 * forward_macs(model) * BATCH_SIZE / 1e9
    result = report.start(NAME, f"The Inception-style BN convnet ({args.net} net), batch "
                          f"{BATCH_SIZE}, 28×28: training steps/s", net=args.net,
                          steps=args.steps, repeats=args.repeats, torch=where,
                          data=data.source, step_gflop=step_gflop)
    result["measurement"] = runner.measure(
        peers, args.steps, args.repeats,
        ratios=[("bnreg", "torch"), ("bnreg_unrolled", "torch"),
                ("bnreg_unrolled", f"bnreg_unrolled_{other_pool}_pool")])
    rows, ratios = result["measurement"]["rows"], result["measurement"]["ratios"]
    result["text"] = [
        f"Data: {data.source}; PyTorch: {where}. {args.repeats} rounds of {args.steps} steps per "
        f"row; {step_gflop:.3f} GFLOP per step (convolutions and the dense layer, forward + "
        "backward)."]
    result["tables"] = [report.table([
        ("row", "row", "{}"), ("rate", "steps/s (median)", "{:.1f}"),
        ("turns", "range", "{:.1f}–{:.1f}"), ("gflops", "GFLOP/s", "{:.1f}"),
        ("cores", "cores busy", "{:.2f}")], [
        {"row": name, "rate": row["rate"], "turns": [row["slowest"], row["fastest"]],
         "gflops": row["rate"] * step_gflop, "cores": row["cores_used"]}
        for name, row in rows.items()])]
    result["notes"] = [
        f"{name} / PyTorch eager: " + report.ratio_text(ratios.get(name + "/torch"), TARGET_TORCH)
        for name in ("bnreg", "bnreg_unrolled")] + [
        f"bnreg_unrolled ({model.inception_branch_pool}-pool branches) / the same with "
        f"{other_pool}-pool branches: "
        + report.ratio_text(ratios.get(f"bnreg_unrolled/bnreg_unrolled_{other_pool}_pool"))]
    suffix = {"study": "_study", "smoke": "_smoke"}.get(args.net, "")
    report.finish(result, args.out, args.name or NAME + suffix)


if __name__ == "__main__":
    main()
