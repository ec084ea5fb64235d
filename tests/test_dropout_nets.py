"""The dropout nets study (experiments/dropout_nets.py): end to end in smoke size, the recipe's
configs, the choice on validation, the verdicts and Fig. 11's reading."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, run_smoke_study

from bnreg.config import override
from experiments import dropout_nets


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropout_smoke")
    return workdir, run_smoke_study("dropout_nets", workdir)


@pytest.mark.integration
@pytest.mark.parametrize("name", dropout_nets.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_name_every_table_and_verdict(smoke_run):
    workdir, stdout = smoke_run
    results = (workdir / "results.md").read_text()
    assert results in stdout
    for heading in ("## Table 2", "## Table 9", "## The paper's orderings",
                    "## Monte-Carlo averaging against weight scaling (Fig. 11)", "## Overfitting"):
        assert f"\n{heading}" in results
    for claim, *_ in dropout_nets.ORDERINGS:
        assert f"- {claim}: " in results
    assert "- Gaussian ≈ Bernoulli dropout" in results
    for part in ("table2", "table9"):
        for net in dropout_nets.nets(dropout_nets.get_config("smoke"), part).values():
            assert f"| {net.label} | " in results
    assert (workdir / "fig11.json").exists()


def test_widths_keep_the_papers_ratios_and_the_schedules_fractions_of_the_run():
    config = dropout_nets.get_config()
    table9 = dropout_nets.PARTS["table9"]["dropout_max_norm"]
    overrides = dropout_nets.net_overrides(config, table9)
    assert overrides["model.hidden_sizes"] == (256, 256, 512)
    # The CPU run: T and T_m 10% of the run (see the docstring).
    assert overrides["optimizer.decay_steps"] == config.num_steps // 10
    assert overrides["optimizer.momentum_steps"] == config.num_steps // 10
    paper = dropout_nets.get_config("paper")
    paper_overrides = dropout_nets.net_overrides(paper, table9)
    assert paper_overrides["model.hidden_sizes"] == (1024, 1024, 2048)
    # The recipe's 10,000 and 100,000 of 1,000,000 updates.
    assert (paper_overrides["optimizer.decay_steps"],
            paper_overrides["optimizer.momentum_steps"]) == (10_000, 100_000)
    assert paper.num_steps == 1_000_000
    assert dropout_nets.nets(paper, "table2")["paper_8192"].widths == (8192, 8192)
    assert "paper_8192" not in dropout_nets.nets(config, "table2")


def test_the_recipe_is_dampened_momentum_inverse_time_decay_and_fan_in_init():
    config = dropout_nets.get_config()
    assert config.optimizer.dampening and config.optimizer.momentum_schedule == "exponential"
    assert (config.optimizer.initial_momentum, config.optimizer.momentum) == (0.5, 0.95)
    assert config.optimizer.schedule == "inverse_time" and config.batch_size == 100
    assert (config.model.kernel_init, config.model.init_stddev) == ("fan_in_normal", 1.0)


def test_dropout_retains_08_of_inputs_and_05_of_hidden_units_gaussian_with_the_same_p():
    bernoulli, gaussian = (dropout_nets.PARTS["table2"][n].overrides
                           for n in ("dropout_max_norm", "gaussian_max_norm"))
    assert (bernoulli["model.input_dropout"], bernoulli["model.hidden_dropout"]) == (0.2, 0.5)
    # The engine's Gaussian noise is N(1, rate/(1 − rate)) = N(1, (1 − p)/p).
    assert gaussian == {**bernoulli, "model.dropout_noise": "gaussian"}


def test_the_sweep_holds_out_a_validation_split_and_the_final_runs_train_on_all():
    config = dropout_nets.get_config("smoke")
    net = dropout_nets.PARTS["table2"]["dropout_max_norm"]
    sweep = override(config, dropout_nets.sweep_overrides(config, net))
    assert sweep.validation_fraction == config.study.validation_fraction > 0
    assert set(sweep.sweep) == {"learning_rate", "max_norm", "seed"}
    final = override(config, dropout_nets.final_overrides(
        config, net, {"learning_rate": 0.3, "max_norm": 3.0}))
    assert final.validation_fraction == 0
    assert (final.optimizer.learning_rate, final.optimizer.max_norm) == (0.3, 3.0)
    assert set(final.sweep) == {"seed"}


def sweep_frame(errors: dict) -> pd.DataFrame:
    return pd.DataFrame([{"learning_rate": lr, "max_norm": c, "seed": seed, "error": e}
                         for (lr, c), values in errors.items()
                         for seed, e in enumerate(values)])


def test_choose_takes_the_lowest_mean_validation_error_and_never_a_diverged_setting():
    net = dropout_nets.PARTS["table2"]["dropout_max_norm"]
    frame = sweep_frame({(0.3, 2.0): [0.20, 0.22], (1.0, 2.0): [0.10, np.nan],
                         (1.0, 3.0): [0.15, 0.16]})
    assert dropout_nets.choose(frame, net) == {"learning_rate": 1.0, "max_norm": 3.0}


def test_choose_is_an_error_when_every_setting_diverged():
    net = dropout_nets.PARTS["table2"]["dropout_max_norm"]
    with pytest.raises(ValueError, match=r"Every setting of .* diverged"):
        dropout_nets.choose(sweep_frame({(10.0, 3.0): [np.nan]}), net)


def part_with_errors(errors: dict[str, list[float]]) -> dropout_nets.PartResult:
    final = pd.DataFrame([{"net": net, "seed": seed, "error": e}
                          for net, values in errors.items() for seed, e in enumerate(values)])
    nets = {name: dropout_nets.PARTS["table2"][name] for name in errors}
    return dropout_nets.PartResult(nets, pd.DataFrame(), {}, pd.DataFrame(), final, {}, {})


@pytest.mark.parametrize(
    "dropout, outcome",
    [([0.10, 0.11, 0.12], "**holds**"), ([0.13, 0.14, 0.15], "**does not hold**"),
     ([0.09, 0.14, 0.11], "not resolved")],
)
def test_an_ordering_reads_holds_does_not_hold_or_not_resolved_from_paired_seeds(
    dropout, outcome
):
    part = part_with_errors({"relu": [0.12, 0.13, 0.14], "dropout_relu": dropout})
    (line,) = dropout_nets.ordering_lines({"table2": part})
    assert line.startswith(f"- dropout < no dropout (ReLU, same net): {outcome} — ")


def fig11_of(gaps_per_k, noise=0.001, seeds=3, repeats=10):
    """A Fig. 11 record whose MC errors lie ``gaps_per_k`` above weight scaling, with noise."""
    weight_scaling = np.linspace(0.10, 0.11, seeds)
    rng = np.random.default_rng(0)
    gaps = np.asarray(gaps_per_k)[None, :, None] + noise * rng.normal(
        size=(repeats, len(gaps_per_k), seeds))
    return {"samples": [1, 10, 50][:len(gaps_per_k)], "seeds": list(range(seeds)),
            "repeats": repeats, "weight_scaling": weight_scaling.tolist(),
            "monte_carlo": (weight_scaling + gaps).tolist()}


def test_fig11_reads_the_smallest_k_from_which_on_mc_reaches_weight_scaling():
    rows, reached = dropout_nets.fig11_summary(fig11_of([0.03, 0.01, 0.0]))
    assert reached == 50
    assert [row[0] for row in rows] == ["1", "10", "50"]
    assert rows[0][3].startswith("+3.0")


def test_fig11_reaching_at_a_small_k_only_is_not_reaching():
    # k = 10 looks like weight scaling, k = 50 is clearly worse: no k from which on it reaches.
    assert dropout_nets.fig11_summary(fig11_of([0.03, 0.0, 0.02]))[1] is None


def test_fig11s_interval_is_over_seeds_not_over_draws():
    # One net 1 point above, one 1 point below, one at: the draws are precise (tiny noise) but
    # the nets disagree, so the interval over seeds is wide and reaches 0.
    fig11 = fig11_of([0.0], noise=1e-5)
    fig11["monte_carlo"] = (np.asarray(fig11["monte_carlo"])
                            + np.array([0.01, -0.01, 0.0])).tolist()
    rows, reached = dropout_nets.fig11_summary(fig11)
    assert reached == 1
    low, high = (float(v) for v in rows[0][3].split("(")[1].rstrip(")").split(" to "))
    assert low < -1 and high > 1


def test_turning_up_is_final_minus_the_step_the_other_seeds_find_best():
    test = np.array([[0.30, 0.20, 0.25], [0.31, 0.21, 0.24], [0.29, 0.19, 0.26]])
    np.testing.assert_allclose(dropout_nets.turning_up(np.arange(3), test),
                               [0.05, 0.03, 0.07])


def test_unknown_parts_and_nets_are_errors_before_any_training(tmp_path):
    config = dropout_nets.get_config("smoke")
    with pytest.raises(ValueError, match="must name parts of"):
        dropout_nets.run_study(override(config, {"study.parts": ("table3",)}), tmp_path)
    with pytest.raises(ValueError, match="unknown nets"):
        dropout_nets.run_study(override(config, {"study.table9_nets": ("dropconnect",)}),
                               tmp_path)
    assert not list(tmp_path.iterdir())


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant must be"):
        dropout_nets.get_config("huge")
