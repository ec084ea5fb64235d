"""Members as one compiled program against the same members one by one: the Fig. 9a program of
``experiments/dropout_p.py`` (every retain p × seed of 784-256-256-256-10 ReLU, dropout on the
hidden units, max-norm, the dropout recipe, batches of 100, 16-bit masks), side by side.

Rows, each trained with ``Engine.train`` in calls of ``--chunk`` steps (no evaluations):

(a) one program: the study's final ``fixed_n`` run, its ``len(p) × len(seeds)`` members
    vmapped together (p a traced drop rate);
(b) one by one: the same members as single-member engines (each p its own static rate, so its
    own compiled program), trained one after the other for the same steps.

Both are built and warmed up with one call each (build + compile + first call is reported),
then take turns (``benchmarks.runner``). A rate is member-steps/s of the median turn.

Commands (from the repository root)::

  .venv/bin/python -m benchmarks.dropout_p_members                 # 3 rounds of 200 steps
  .venv/bin/python -m benchmarks.dropout_p_members --smoke --out /tmp/smoke   # seconds

Results: ``<out>/dropout_p_members.json`` (every turn) and ``.md``. Needs Fashion-MNIST
(Debian's dataset-fashion-mnist) unless ``--synthetic``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks import common, report, runner
from bnreg.config import override
from experiments import dropout_p

NAME = "dropout_p_members"
SMOKE = {"steps": 4, "repeats": 2, "chunk": 2, "variant": "smoke", "examples": 1000,
         "retains": "0.5,1", "seeds": "0"}


def members_config(variant: str, retains: str = "", seeds: str = "") -> Any:
    """The study's ``fixed_n`` run (``variant``'s config; ``retains`` and ``seeds``, if given,
    replace its retain probabilities and seeds) at lr0 0.3 and c 2, on Fashion-MNIST, no
    progress bar."""
    config = dropout_p.get_config(variant)
    with config.unlocked():
        if retains:
            config.study.retain_probabilities = tuple(float(p) for p in retains.split(","))
        if seeds:
            config.sweep.seed = tuple(int(seed) for seed in seeds.split(","))
    runs = dropout_p.final_runs(config, {"learning_rate": 0.3, "max_norm": 2.0})
    return override(config, {**runs["fixed_n"], "dataset": common.DATASET, "progress": False})


def one_by_one(config: Any, data: Any, chunk: int) -> runner.Peer:
    """Row (b): every member of ``config`` as its own single-member engine, in turn."""
    singles = [runner.engine_peer(override(config, {
        "model.hidden_dropout": rate, "seed": seed, "sweep.hidden_dropout": (rate,),
        "sweep.seed": (seed,)}), data=data, chunk=chunk)
        for rate in config.sweep.hidden_dropout for seed in config.sweep.seed]

    def run(num_steps: int) -> None:
        for single in singles:
            single.run(num_steps)

    return runner.Peer(run, work_per_step=len(singles), unit="member-steps/s")


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.arguments(__doc__, steps=200)
    parser.add_argument("--chunk", type=int, default=100, help="steps per Engine.train call")
    parser.add_argument("--variant", default="full", help="the study's config variant")
    parser.add_argument("--retains", default="", help="retain p, e.g. 0.5,1 (default: the study's)")
    parser.add_argument("--seeds", default="", help="seeds, e.g. 0,1 (default: the study's)")
    parser.add_argument("--examples", type=int, default=60_000, help="synthetic examples")
    args = common.parse(parser, argv, SMOKE)
    if args.steps % args.chunk:
        parser.error(f"--steps ({args.steps}) must be a multiple of --chunk ({args.chunk}).")
    from bnreg.engine import load_run_data

    config = members_config(args.variant, args.retains, args.seeds)
    data = (common.synthetic_run_data(args.examples, 1000) if args.synthetic
            else load_run_data(config))
    peers = {"one_program": lambda: runner.engine_peer(config, data=data, chunk=args.chunk),
             "one_by_one": lambda: one_by_one(config, data, args.chunk)}
    result = report.start(NAME, "Members as one program vs one by one (the Fig. 9a program)",
                          steps=args.steps, repeats=args.repeats, chunk=args.chunk,
                          data=data.source, retains=list(config.study.retain_probabilities),
                          seeds=list(config.sweep.seed))
    result["measurement"] = runner.measure(peers, args.steps, args.repeats,
                                           ratios=[("one_program", "one_by_one")],
                                           warm_up_steps=args.chunk)
    rows = result["measurement"]["rows"]
    ratio = result["measurement"]["ratios"]["one_program/one_by_one"]
    result["text"] = [
        f"Data: {data.source}. Retain p {result['retains']} × seeds {result['seeds']}; "
        f"{args.repeats} rounds of {args.steps} steps per member (calls of {args.chunk})."]
    result["tables"] = [report.table([
        ("row", "row", "{}"), ("members", "members", "{}"),
        ("rate", "member-steps/s (median turn)", "{:.0f}"), ("turns", "range", "{:.0f}–{:.0f}"),
        ("compile", "build + compile + first call (s)", "{:.1f}")], [
        {"row": label, "members": len(result["retains"]) * len(result["seeds"]),
         "rate": rows[name]["rate"], "turns": [rows[name]["slowest"], rows[name]["fastest"]],
         "compile": rows[name]["build_s"] + rows[name]["warm_up_s"]}
        for name, label in (("one_program", "(a) one program, every p × seed"),
                            ("one_by_one", "(b) the same members one by one"))])]
    result["notes"] = [f"(a)/(b): {report.ratio_text(ratio)}."]
    report.finish(result, args.out, args.name or NAME)


if __name__ == "__main__":
    main()
