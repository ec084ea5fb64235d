"""The accelerated-BN study (experiments/bn_accelerate.py): end to end in smoke size, the
accelerating changes as the built optimizer sees them, a decay per step that the run's length
does not change, and its own measures on constructed curves."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_figure, constructed_results, run_smoke_study

from bnreg import engine
from bnreg.config import override
from bnreg.engine.optimizer import learning_rate_factor
from bnreg.study.arms import final_runs
from experiments import bn_accelerate

ON_DIGITS = {"dataset": "digits", "train_subset": 600, "evaluation.subset": 100}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bn_accelerate_smoke")
    return workdir, run_smoke_study("bn_accelerate", workdir)


@pytest.mark.integration
@pytest.mark.parametrize("name", bn_accelerate.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_hold_the_claims_and_the_fig3_table(smoke_run):
    workdir, _ = smoke_run
    results = (workdir / "results.md").read_text()
    config = bn_accelerate.get_config("smoke")
    for heading in ("## Claims", "## Fig. 3", "## Steps to fixed accuracies",
                    "## Tuning on the validation split"):
        assert f"\n{heading}" in results
    for net in config.study.nets:
        assert f"| {bn_accelerate.NETS[net].label} | " in results
    claims = bn_accelerate.claims(config)
    assert {c.name for c in claims} == {"faster_bn_x5", "higher_bn_x5_inception",
                                        "sigmoid_trainable", "sigmoid_never", "regularizer"}
    for claim in claims:
        assert sum(line.startswith(f"| {claim.statement}") for line in results.splitlines()) == 1


def final_configs(lr0: float = 0.01, **changes):
    config = override(bn_accelerate.get_config(), changes)
    runs = final_runs(config, bn_accelerate.arms(config), {"inception": {"learning_rate": lr0}})
    return {name: override(config, overrides) for name, overrides in runs.items()}


def test_the_accelerating_changes_reach_the_built_schedule_and_optimizer():
    built = final_configs()
    inception, accelerated = built["inception"], built["bn_x5"]
    # The decay 6× faster per step: the accelerated rate falls by 0.96 in a sixth of the steps.
    assert accelerated.optimizer.decay_steps == round(inception.optimizer.decay_steps / 6)
    slow, fast = (learning_rate_factor(c.optimizer) for c in (inception, accelerated))
    np.testing.assert_allclose(float(slow(inception.optimizer.decay_steps)), 0.96, rtol=1e-6)
    np.testing.assert_allclose(float(fast(accelerated.optimizer.decay_steps)), 0.96, rtol=1e-6)
    assert accelerated.optimizer.weight_decay == inception.optimizer.weight_decay / 5
    assert (inception.model.hidden_dropout, accelerated.model.hidden_dropout) == (0.4, 0.0)
    assert accelerated.optimizer.learning_rate == 5 * inception.optimizer.learning_rate
    assert built["bn_x30"].optimizer.learning_rate == 30 * inception.optimizer.learning_rate
    # The BN-Baseline changes only the norm.
    baseline = built["bn_baseline"]
    assert baseline.model.norm == "batch" and inception.model.norm is None
    assert baseline.optimizer == inception.optimizer
    assert baseline.model.hidden_dropout == inception.model.hidden_dropout


@pytest.mark.parametrize("steps", [2_400, 24_000])
def test_the_decay_is_per_step_whatever_the_runs_length(steps):
    built = final_configs(num_steps=steps, checkpoint_every=1_200)
    # The accelerated nets are still at about a third of their rate at the end of the CPU run,
    # far from the 10⁻⁶ · lr0 a decay fitted to the run's length gave.
    assert built["bn_x5"].optimizer.decay_steps == round(500 / 6)
    assert float(learning_rate_factor(built["bn_x5"].optimizer)(2_400)) > 0.3


@pytest.mark.parametrize("net", sorted(bn_accelerate.NETS))
def test_every_net_is_a_valid_inception_run_with_momentum_and_batch_32(net):
    config = final_configs()[net]
    engine.check(override(config, ON_DIGITS))
    assert (config.model.name, config.batch_size, config.optimizer.momentum) == (
        "inception", 32, 0.9)
    assert config.model.activation == ("sigmoid" if "sigmoid" in net else "relu")
    assert config.model.inception_branch_pool == "avg"


def test_a_sigmoid_bn_net_trains_one_step():
    config = override(final_configs()["bn_x5_sigmoid"], {
        **ON_DIGITS, "model.inception_stem": 4, "model.inception_modules": ((2, 2, 3, 2, 2, 2),),
        "unroll_steps": False, "steps_per_call": 0})
    run = engine.build(config)
    state, losses = run.train(run.init(), run.empty_order(), 1)[::2]
    assert int(state.step) == 1 and np.isfinite(np.asarray(losses)).all()


def test_the_rise_of_a_net_that_never_trains_is_its_highest_accuracy_above_its_start():
    history = [{"arm": "inception_sigmoid", "seed": seed, "member": seed, "step": 10 * t,
                "accuracy": value}
               for seed, curve in enumerate(([0.10, 0.12, 0.11], [0.09, 0.20, 0.15]))
               for t, value in enumerate(curve)]
    results = constructed_results([{"arm": "inception_sigmoid", "seed": s} for s in (0, 1)],
                                  history)
    rise = bn_accelerate.learned("inception_sigmoid").read(results)
    np.testing.assert_allclose(rise.to_numpy(), [0.02, 0.11])


def test_the_study_refuses_nets_without_the_inception_or_bn_x5():
    config = override(bn_accelerate.get_config("smoke"), {"study.nets": ("bn_x5",)})
    with pytest.raises(ValueError, match="'inception' and 'bn_x5' among them"):
        bn_accelerate.nets(config)
