"""The retain-probability study (experiments/dropout_p.py): end to end in smoke size, the widths
of both designs, one program for every p of (a), p = 1 as the net without dropout, and the
verdicts on constructed tables."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, run_smoke_study

from bnreg import engine
from bnreg.config import override
from experiments import dropout_p, dropout_recipe


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropout_p_smoke")
    return workdir, run_smoke_study("dropout_p", workdir)


@pytest.mark.integration
def test_smoke_study_writes_the_figure_and_every_verdict(smoke_run):
    workdir, stdout = smoke_run
    assert_figure(workdir / dropout_p.FIGURE, stdout)
    results = (workdir / "results.md").read_text()
    assert results in stdout
    for label in dropout_p.DESIGNS.values():
        assert f"- {label}: the best p is " in results
    assert "- at p = 0.1, (b) p·n fixed beats (a) n fixed" in results
    curves = results.split("## Test and training error against p")[1]
    for p in dropout_p.get_config("smoke").study.retain_probabilities:
        assert f"\n| {p:g} | " in curves


@pytest.mark.parametrize("retain,expected", [
    (1.0, (32, 32, 64)),
    (0.5, (64, 64, 128)),
    (0.1, (320, 320, 640)),  # 32 / 0.1 is 320.00000000000006 in floating point
    (0.3, (107, 107, 213)),  # 106.67 → 107, 213.33 → 213
    (0.7, (46, 46, 91)),  # 45.71 → 46, 91.43 → 91
])
def test_fixed_pn_widths_keep_p_times_n_to_the_nearest_unit(retain, expected):
    config = dropout_p.get_config()  # width scale 1/8: 32, 32, 64 units kept
    assert dropout_p.fixed_pn_widths(config, retain) == expected


@pytest.mark.parametrize("width,expected", [(2.5, 3), (3.5, 4), (2.4999, 2), (0.2, 1)])
def test_nearest_unit_rounds_halves_up_and_keeps_at_least_one(width, expected):
    assert dropout_recipe.nearest_unit(width) == expected


@pytest.mark.parametrize("retain,rate", [(0.7, 0.3), (0.1, 0.9), (1.0, 0.0), (0.3, 0.7)])
def test_drop_rates_are_exact_decimals(retain, rate):
    assert dropout_p.drop_rate(retain) == rate


def test_the_paper_variant_uses_the_papers_widths():
    config = dropout_p.get_config("paper")
    assert dropout_p.fixed_n_widths(config) == (2048, 2048, 2048)
    assert dropout_p.fixed_pn_widths(config, 0.5) == (512, 512, 1024)


def test_every_p_of_design_a_is_a_member_of_one_run_and_each_p_of_b_a_run():
    config = dropout_p.get_config()
    runs = dropout_p.final_runs(config, {"learning_rate": 1.0, "max_norm": 2.0})
    retains = config.study.retain_probabilities
    assert set(runs) == {"fixed_n", *(f"fixed_pn_p{p:g}" for p in retains)}
    members = engine.members_from_config(override(config, runs["fixed_n"]))
    assert len(members) == len(retains) * len(config.sweep.seed)
    assert sorted({m["hidden_dropout"] for m in members}) == sorted(
        dropout_p.drop_rate(p) for p in retains)
    for p in retains:
        run = override(config, runs[f"fixed_pn_p{p:g}"])
        assert run.model.hidden_dropout == dropout_p.drop_rate(p)
        assert tuple(run.model.hidden_sizes) == dropout_p.fixed_pn_widths(config, p)
        assert (run.optimizer.learning_rate, run.optimizer.max_norm) == (1.0, 2.0)
    for overrides in (dropout_p.sweep_overrides(config), *runs.values()):
        assert override(config, overrides).model.dropout_scaling == "paper"


@pytest.mark.parametrize("retains", [(0.0, 0.5), (0.5, 1.2), (0.5, 0.5), ()])
def test_bad_retain_probabilities_are_an_error(retains):
    config = dropout_p.get_config("smoke")
    with config.unlocked():
        config.study.retain_probabilities = retains
    with pytest.raises(ValueError, match="must be distinct retain probabilities in"):
        dropout_p.final_runs(config, {"learning_rate": 1.0, "max_norm": 2.0})


def fixed_n_smoke_engine(steps: int = 4):
    config = dropout_p.get_config("smoke")
    overrides = dropout_p.final_runs(config, {"learning_rate": 0.3, "max_norm": 3.0})["fixed_n"]
    return engine.build(override(config, {**overrides, "progress": False,
                                          "num_steps": steps}))


def test_every_p_and_seed_of_design_a_trains_in_one_compiled_program():
    run_engine = fixed_n_smoke_engine()
    state, order = run_engine.init(), run_engine.empty_order()
    for _ in range(3):
        state, order, losses = run_engine.train(state, order, 2)
    assert losses.shape == (2, len(run_engine.members))
    assert "hidden_dropout" in run_engine.members.traced_axes  # one program for every p
    assert run_engine.train_programs == 1


def test_retaining_every_unit_trains_exactly_the_net_without_dropout():
    """p = 1 as a member of (a)'s program equals a run of the same net with no dropout at all
    (the same seed, the same batches), bit for bit — in a program of as many members, since
    XLA's batched matmuls of other batch counts may sum in another order."""
    run_engine = fixed_n_smoke_engine()
    state, order = run_engine.init(), run_engine.empty_order()
    state, _, _ = run_engine.train(state, order, 4)
    members = [run_engine.members.member(i) for i in range(len(run_engine.members))]
    index = next(i for i, m in enumerate(members) if m["hidden_dropout"] == 0.0 and
                 m["seed"] == 0)
    config = dropout_p.get_config("smoke")
    overrides = dropout_p.final_runs(config, {"learning_rate": 0.3, "max_norm": 3.0})["fixed_n"]
    del overrides["sweep.hidden_dropout"]
    plain = engine.build(override(config, {**overrides, "progress": False, "num_steps": 4,
                                           "model.hidden_dropout": 0.0,
                                           "sweep.seed": tuple(range(len(members)))}))
    plain_state, _, _ = plain.train(plain.init(), plain.empty_order(), 4)
    for mine, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain_state.params),
                            strict=True):
        np.testing.assert_array_equal(np.asarray(mine)[index], np.asarray(theirs)[0])


def constructed(test: dict[str, dict[float, list[float]]],
                train: dict[str, dict[float, list[float]]]) -> dropout_p.PStudy:
    rows = [{"design": design, "retain": p, "seed": seed, "error": e / 100,
             "error_on_train": train[design][p][seed] / 100, "widths": "1-1-1"}
            for design, curve in test.items() for p, values in curve.items()
            for seed, e in enumerate(values)]
    return dropout_p.PStudy(pd.DataFrame(), {}, pd.DataFrame(rows), {}, {})


def test_flat_range_is_every_p_whose_mean_lies_in_the_best_ps_interval():
    test = {"fixed_n": {0.1: [5.0, 5.2, 5.1], 0.5: [2.0, 2.4, 2.2], 0.7: [2.3, 2.5, 2.4],
                        1.0: [3.0, 3.1, 3.2]}}
    study = constructed(test, test)
    best, within = dropout_p.flat_range(study, "fixed_n")
    # the best p's mean 2.2 ± 0.2 (3 seeds): interval 2.2 ± 4.30·0.2/√3 = [1.70, 2.70]
    assert best == 0.5 and within == [0.5, 0.7]


def test_verdicts_on_a_constructed_study():
    seeds = [0.0, 0.1, -0.1]
    curve = {0.1: 5.0, 0.5: 2.0, 1.0: 3.0}
    test = {design: {p: [v + s + shift for s in seeds] for p, v in curve.items()}
            for design, shift in (("fixed_n", 0.0), ("fixed_pn", -1.0))}
    train_curve = {0.1: 4.8, 0.5: 1.0, 1.0: 0.0}  # underfits at 0.1, overfits at 1.0
    train = {design: {p: [v + s for s in seeds] for p, v in train_curve.items()}
             for design in test}
    lines = "\n".join(dropout_p.verdict_lines(constructed(test, train)))
    assert "- (a) n fixed: the best p is 0.5; the p within its 95% interval: 0.5 " in lines
    assert "- (a) n fixed: at p = 0.1 the net underfits (its training error above the best " \
           "p's): **holds**" in lines
    assert "- (a) n fixed: at p = 1 the net overfits more (its test − train gap above the " \
           "best p's): **holds**" in lines
    assert "(b) p·n fixed beats (a) n fixed (paper, MNIST: 1.7% vs 2.7%): **holds** — -1.00" \
        in lines
