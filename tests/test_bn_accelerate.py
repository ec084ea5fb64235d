"""The accelerated-BN study (experiments/bn_accelerate.py): end to end in smoke size, the
accelerating changes as the built optimizer sees them, steps-to-accuracy and the verdicts on
constructed curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, run_smoke_study

from bnreg import engine
from bnreg.config import override
from bnreg.engine.optimizer import learning_rate_factor
from experiments import bn_accelerate

ON_DIGITS = {"dataset": "digits", "evaluation.train_examples": 300}  # engine.check loads data


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bn_accelerate_smoke")
    return workdir, run_smoke_study("bn_accelerate", workdir)


@pytest.mark.slow
@pytest.mark.parametrize("name", bn_accelerate.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.slow
def test_smoke_results_hold_the_fig3_table_and_the_verdicts(smoke_run):
    workdir, _ = smoke_run
    results = (workdir / "results.md").read_text()
    for heading in ("## Fig. 3", "## Verdicts", "## The Inception's lr0"):
        assert f"\n{heading}" in results
    for net in bn_accelerate.get_config("smoke").study.nets:
        assert f"| {bn_accelerate.NETS[net].label} | " in results
    assert "- BN-x5 reaches the Inception's maximum in fewer steps: " in results
    assert "- Inception-Sigmoid never trains" in results


def built(net: str, lr0: float = 0.01):
    config = bn_accelerate.get_config()
    return override(config, bn_accelerate.net_overrides(config, bn_accelerate.NETS[net], lr0))


def test_the_accelerating_changes_reach_the_built_schedule_and_optimizer():
    inception, accelerated = built("inception"), built("bn_x5")
    steps = inception.num_steps
    # Decay 6× faster: the accelerated rate falls to 0.1 · lr0 at T/6, the Inception's at T.
    assert accelerated.optimizer.decay_steps == round(steps / 6)
    slow, fast = (learning_rate_factor(c.optimizer) for c in (inception, accelerated))
    np.testing.assert_allclose(float(slow(steps)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(fast(round(steps / 6))), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(fast(steps)), 0.1 ** (steps / round(steps / 6)), rtol=1e-4)
    assert accelerated.optimizer.weight_decay == inception.optimizer.weight_decay / 5
    assert (inception.model.hidden_dropout, accelerated.model.hidden_dropout) == (0.4, 0.0)
    assert accelerated.optimizer.learning_rate == 5 * inception.optimizer.learning_rate
    assert built("bn_x30").optimizer.learning_rate == 30 * inception.optimizer.learning_rate
    # The BN-Baseline changes only the norm.
    baseline = built("bn_baseline")
    assert baseline.model.norm == "batch" and inception.model.norm is None
    assert baseline.optimizer == inception.optimizer
    assert baseline.model.hidden_dropout == inception.model.hidden_dropout


@pytest.mark.parametrize("net", sorted(bn_accelerate.NETS))
def test_every_net_is_a_valid_inception_run_with_momentum_and_batch_32(net):
    config = built(net)
    engine.check(override(config, ON_DIGITS))
    assert (config.model.name, config.batch_size, config.optimizer.momentum) == (
        "inception", 32, 0.9)
    assert config.model.activation == ("sigmoid" if "sigmoid" in net else "relu")


def test_a_sigmoid_bn_net_trains_one_step():
    config = override(built("bn_x5_sigmoid"), {
        **ON_DIGITS, "model.inception_stem": 4, "model.inception_modules": ((2, 2, 3, 2, 2, 2),),
        "unroll_steps": False, "steps_per_call": 0})
    run = engine.build(config)
    state, losses = run.train(run.init(), run.empty_order(), 1)[::2]
    assert int(state.step) == 1 and np.isfinite(np.asarray(losses)).all()


def test_steps_to_reach_read_each_seeds_first_evaluation_at_the_target():
    steps = np.array([0, 100, 200, 300])
    curves = np.array([[0.1, 0.5, 0.7, 0.8], [0.1, 0.6, 0.6, 0.65]])
    np.testing.assert_array_equal(bn_accelerate.steps_to_reach(steps, curves, 0.7),
                                  [200, np.nan])


def constructed_history(curves: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Per net, per seed, test accuracy at steps 0, 100, …; training accuracy 2 points above."""
    rows = []
    for net, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            rows += [{"net": net, "seed": seed, "member": seed, "step": 100 * t,
                      "accuracy": a, "accuracy_on_train": a + 0.02}
                     for t, a in enumerate(curve)]
    return pd.DataFrame(rows)


def test_fig3_and_the_verdicts_on_constructed_curves():
    history = constructed_history({
        "inception": [[0.1, 0.3, 0.5, 0.60], [0.1, 0.3, 0.5, 0.62], [0.1, 0.3, 0.52, 0.61]],
        "bn_x5": [[0.1, 0.62, 0.7, 0.72], [0.1, 0.61, 0.7, 0.73], [0.1, 0.65, 0.71, 0.7]],
        "inception_sigmoid": [[0.1, 0.1, 0.11, 0.1]] * 3,
        "bn_x5_sigmoid": [[0.1, 0.4, 0.5, 0.55], [0.1, 0.45, 0.5, 0.56], [0.1, 0.4, 0.52, 0.54]],
    })
    names = {n: bn_accelerate.NETS[n] for n in ("inception", "bn_x5", "inception_sigmoid",
                                                "bn_x5_sigmoid")}
    target, rows = bn_accelerate.fig3(history, names)
    assert target == pytest.approx(np.mean([0.60, 0.62, 0.61]))
    np.testing.assert_array_equal(rows["bn_x5"].steps, [100, 100, 100])
    # Seed 0 of the Inception stays below its mean curve's maximum: counted at the last step.
    np.testing.assert_array_equal(rows["inception"].steps, [300, 300, 300])
    assert (rows["inception"].censored, rows["bn_x5"].censored) == (1, 0)
    assert bn_accelerate.speedup(np.array([300.0, 300.0]), np.array([100.0, 100.0])) == (
        "3.00 ± 0.00×")
    lines = bn_accelerate.claims(rows, history, names)
    assert any(line.startswith("- BN-x5 ends higher than the Inception: **holds**")
               for line in lines)
    assert any(line.startswith("- BN-x5 reaches the Inception's maximum in fewer steps: "
                               "**holds**") for line in lines)
    assert any(line.startswith("- BN makes sigmoid trainable: BN-x5-Sigmoid above "
                               "Inception-Sigmoid: **holds**") for line in lines)
    assert any(line.startswith("- Inception-Sigmoid never trains (its test accuracy rises by "
                               "less than 5 points): **holds**") for line in lines)


def test_a_net_that_never_reaches_the_target_fails_the_fewer_steps_claim():
    history = constructed_history({"inception": [[0.1, 0.5, 0.6]] * 2,
                                   "bn_x5": [[0.1, 0.5, 0.55], [0.1, 0.6, 0.6]]})
    names = {n: bn_accelerate.NETS[n] for n in ("inception", "bn_x5")}
    _, rows = bn_accelerate.fig3(history, names)
    lines = bn_accelerate.claims(rows, history, names)
    assert lines[0] == ("- BN-x5 reaches the Inception's maximum in fewer steps: **does not "
                        "hold** — BN-x5 never reached the Inception's maximum on some seed.")


def test_the_study_refuses_nets_without_the_inception():
    config = override(bn_accelerate.get_config("smoke"), {"study.nets": ("bn_x5",)})
    with pytest.raises(ValueError, match="'inception' among them"):
        bn_accelerate.nets(config)
