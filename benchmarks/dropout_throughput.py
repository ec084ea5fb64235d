"""Training throughput of the dropout paper's MNIST-style MLP: bnreg with and without dropout,
against PyTorch eager, side by side.

The network: 784-1024-1024-1024-10, ReLU hidden units, dropout on the input (drop rate 0.2,
retain p = 0.8) and after every hidden layer (drop rate 0.5), max-norm c = 3 on each hidden
unit's incoming weights (projected after every update; the output layer is free), lecun-normal
weights, zero biases, softmax cross-entropy, SGD at lr 0.1 with momentum 0.95, batches of 100
from shuffled epochs of Fashion-MNIST's 60000 training images (``--synthetic``: a
binarized-MNIST-shaped stand-in). Rows:

(a) bnreg's engine with dropout and max-norm, one member, ``Engine.train`` in calls of 500 steps
    (the data order carried between calls as ``train_and_evaluate`` does; no evaluations);
(a″) the same with ``model.dropout_mask_bits=16`` (half the random bits, p resolved to 2⁻¹⁶);
(b) the same engine and config with drop rates 0 (max-norm still on): what dropout costs;
(c) PyTorch eager, 2 threads (``benchmarks.torch_peers.dropout_mlp_peer``: ``nn.Dropout``,
    ``SGD(momentum=0.95)``, ``renorm_`` after every step); (c′) one thread;
(d) the fp32 matmul peak: eight 2048² ``jnp.matmul`` per turn, in the same rounds.

The rows take turns (``benchmarks.runner``); GFLOP/s counts a step's forward and backward matrix
products analytically (1.586 GFLOP per step of 100 examples). Targets: (a)/(b) ≥ 0.85,
(a)/(c) ≥ 2.5, (a)'s GFLOP/s ≥ 60% of the peak.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropout_throughput            # 3 rounds of 500 steps, ~4 min
  .venv/bin/python -m benchmarks.dropout_throughput --steps 50 --repeats 2 --out /tmp/dropout
  .venv/bin/python -m benchmarks.dropout_throughput --smoke --out /tmp/smoke   # seconds

``--steps`` must be a multiple of the call, ``min(500, steps)``. Results:
``<out>/dropout_throughput.json`` (every turn) and ``.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import common, report, runner, torch_peers
from bnreg.engine import load_run_data

NAME = "dropout_throughput"
HIDDEN_SIZES, BATCH_SIZE = common.DROPOUT_MLP["hidden_sizes"], common.DROPOUT_MLP["batch_size"]
CHUNK_STEPS = 500
TARGET_DROPOUT, TARGET_TORCH, TARGET_PEAK = 0.85, 2.5, 0.6
SMOKE = {"steps": 4, "repeats": 2, "width": 32, "peak_size": 128, "examples": 1000}

ROWS = {
    "dropout": "(a) bnreg engine, dropout 0.2/0.5 + max-norm 3",
    "dropout_16bit": "(a″) the same with 16-bit masks (model.dropout_mask_bits=16)",
    "no_dropout": "(b) bnreg engine, drop rates 0 (max-norm 3)",
    "torch_2threads": "(c) PyTorch eager, nn.Dropout + renorm_, 2 threads",
    "torch_1thread": "(c′) PyTorch eager, nn.Dropout + renorm_, 1 thread",
    "peak": "(d) peak: {}² float32 jnp.matmul",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=500)
    parser.add_argument("--width", type=int, default=HIDDEN_SIZES[0], help="hidden units")
    parser.add_argument("--peak-size", type=int, default=2048, help="the peak's matmul size")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    args = common.parse(parser, argv, SMOKE)
    chunk = min(CHUNK_STEPS, args.steps)
    if args.steps % chunk:
        parser.error(f"--steps must be a multiple of {CHUNK_STEPS} (the call), or below it.")
    sizes = (args.width,) * len(HIDDEN_SIZES)
    torch, where = torch_peers.load(args.torch_path) if args.torch else (None, "off (--smoke)")
    data = (common.synthetic_run_data(args.examples, 1000) if args.synthetic
            else load_run_data(common.dropout_mlp_config(dropout=True, num_steps=args.steps)))

    def bnreg(dropout: bool, bits: int = 32):
        config = common.dropout_mlp_config(dropout=dropout, num_steps=args.steps,
                                           mask_bits=bits, hidden_sizes=sizes)
        return lambda: runner.engine_peer(config, data=data, chunk=chunk)

    peers: dict[str, Any] = {"dropout": bnreg(True), "dropout_16bit": bnreg(True, 16),
                             "no_dropout": bnreg(False)}
    result = report.start(NAME, f"Training throughput: the dropout MLP (784-{sizes[0]}×3-10 "
                          "ReLU)", steps=args.steps, repeats=args.repeats, chunk_steps=chunk,
                          peak_size=args.peak_size,
                          torch=where, data="synthetic" if args.synthetic else common.DATASET,
                          step_gflop=common.matmul_flops_per_step(
                              (common.INPUT_SIZE, *sizes, common.NUM_CLASSES), BATCH_SIZE) / 1e9)
    train = data.train
    if torch is not None:
        for name, count in (("torch_2threads", 2), ("torch_1thread", 1)):
            peers[name] = torch_peers.dropout_mlp_peer(
                torch, train.images, train.labels, **{**common.DROPOUT_MLP, "hidden_sizes": sizes},
                thread_count=count)
    peers["peak"] = runner.peak_peer(args.peak_size)
    result["measurement"] = runner.measure(peers, args.steps, args.repeats, ratios=[
        ("dropout", "no_dropout"), ("dropout_16bit", "no_dropout"),
        ("dropout", "torch_2threads"), ("dropout", "torch_1thread")])
    result["data_source"] = f"{data.source}, train split {tuple(train.images.shape)}"
    describe(result)
    report.finish(result, args.out, args.name or NAME)


def describe(result: dict[str, Any]) -> None:
    """The report's text, table and targets."""
    rows, ratios = result["measurement"]["rows"], result["measurement"]["ratios"]
    gflop, peak = result["step_gflop"], rows["peak"]["rate"]

    def versus(name: str, base: str) -> float | None:
        return rows[name]["rate"] / rows[base]["rate"] if base in rows else None

    shown = []
    for name, label in ROWS.items():
        if name in rows:
            row, is_peak = rows[name], name == "peak"
            rate = row["rate"] * (1 if is_peak else gflop)
            shown.append({
                "row": label.format(result["peak_size"]), "rate": None if is_peak else row["rate"],
                "turns": [row["slowest"], row["fastest"]],
                **({} if is_peak else {b: versus(name, b) for b in
                                       ("no_dropout", "torch_2threads", "torch_1thread")}),
                "gflops": rate, "of_peak": 100 * rate / peak, "cores": row["cores_used"],
                "loss": row["info"].get("last_loss")})
    result["text"] = [
        f"Data: {result['data_source']}. Every row took {result['repeats']} turns of "
        f"{result['steps']} steps (bnreg: Engine.train calls of {result['chunk_steps']}), round "
        "robin after a warm-up turn; rates are the median turn, *turns* the slowest and fastest "
        "(GFLOP/s for the peak); *last loss* checks that nothing diverged. GFLOP/s = steps/s × "
        f"{gflop:.4f} GFLOP (analytic). PyTorch: {result['torch']}."]
    result["tables"] = [report.table([
        ("row", "row", "{}"), ("rate", "steps/s", "{:.1f}"), ("turns", "turns", "{:.1f}–{:.1f}"),
        ("no_dropout", "vs (b) no dropout", "{:.2f}×"),
        ("torch_2threads", "vs PyTorch 2 threads", "{:.2f}×"),
        ("torch_1thread", "vs PyTorch 1 thread", "{:.2f}×"), ("gflops", "GFLOP/s", "{:.1f}"),
        ("of_peak", "of peak", "{:.0f}%"), ("cores", "cores used", "{:.2f}"),
        ("loss", "last loss", "{:.3f}")], shown)]
    of_peak = gflop * rows["dropout"]["rate"] / peak
    result["notes"] = [
        f"(a) dropout / (b) no dropout ≥ {TARGET_DROPOUT}: "
        f"{report.ratio_text(ratios.get('dropout/no_dropout'), TARGET_DROPOUT)}; 16-bit masks "
        f"(a″): {report.ratio_text(ratios.get('dropout_16bit/no_dropout'), TARGET_DROPOUT)}.",
        f"(a) / (c) PyTorch 2 threads ≥ {TARGET_TORCH}: "
        f"{report.ratio_text(ratios.get('dropout/torch_2threads'), TARGET_TORCH)}; against 1 "
        f"thread {report.ratio_text(ratios.get('dropout/torch_1thread'))}.",
        f"(a) GFLOP/s / peak ≥ {TARGET_PEAK:.0%}: **{of_peak:.0%}** "
        f"({'met' if of_peak >= TARGET_PEAK else 'NOT met'}; peak {peak:.0f} GFLOP/s).",
    ]


if __name__ == "__main__":
    main()
