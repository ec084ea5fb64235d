"""The DropConnect study (experiments/dropconnect.py): end to end in smoke size, its arms as the
engine builds them, the forms and widths it states, and its claims and gates on constructed
curves."""

from __future__ import annotations

import pytest
from conftest import assert_figure, constructed_results, run_smoke_study

from bnreg import engine
from bnreg.config import override
from bnreg.study import StudyConfigError, evaluate, run
from bnreg.study.arms import final_runs, tuning_overrides
from experiments import dropconnect


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropconnect_smoke")
    return workdir, run_smoke_study("dropconnect", workdir)


@pytest.mark.integration
@pytest.mark.parametrize("name", dropconnect.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_hold_every_claim_table_and_inference_row(smoke_run):
    workdir, _ = smoke_run
    results = (workdir / "results.md").read_text()
    for heading in ("## Claims", "## Tuning on the validation split", "## Test error %, mean "
                    "inference (Table 2)", "## Mean against Gaussian inference",
                    "## Test error against the hidden layers' width (Fig. 2a",
                    "## Test error against the drop rate (Fig. 2b"):
        assert f"\n{heading}" in results
    for claim in dropconnect.claims(dropconnect.get_config("smoke")):
        assert sum(line.startswith(f"| {claim.statement}") for line in results.splitlines()) == 1
    assert "| relu | DropConnect, one mask per batch | " in results
    summary = (workdir / "runs/final/relu_dropconnect/summary.json").read_text()
    assert '"error_gaussian_z1"' in summary and '"error_gaussian_z10"' in summary


# engine.check loads the dataset: the always-there digits stand in for the study's.
ON_DIGITS = {"dataset": "digits", "train_subset": 600, "evaluation.train_examples": 300}


def full_runs(variant: str = "full", lr0: float = 0.3):
    config = override(dropconnect.get_config(variant), ON_DIGITS)
    arms = dropconnect.arms(config)
    choices = {arm.name: {"learning_rate": lr0} for arm in arms if arm.tune}
    return config, arms, {name: override(config, overrides)
                          for name, overrides in final_runs(config, arms, choices).items()}


def test_every_run_of_the_full_config_is_valid_and_in_the_papers_form():
    config, arms, runs = full_runs()
    assert len([arm for arm in arms if arm.tune]) == 3 * 4
    for arm in (a for a in arms if a.tune):
        engine.check(override(config, tuning_overrides(config, arm)))
    for name, run_config in runs.items():
        engine.check(run_config)
        assert run_config.model.dropout_scaling == "paper", name
        assert run_config.model.dropconnect_mask_bits == 16, name
    cell = runs["relu_dropconnect"]
    assert (cell.model.dropconnect, cell.model.dropconnect_per_example,
            cell.model.hidden_dropout, tuple(cell.evaluation.final)) == (0.5, True, 0.0,
                                                                         ("gaussian",))
    assert not runs["tanh_dropconnect_batch"].model.dropconnect_per_example
    assert tuple(runs["sigmoid_dropout"].evaluation.final) == ()


@pytest.mark.parametrize("variant, widths, rates_widths, sizes", [
    ("full", (100, 100), (50, 50), (25, 50, 200)),
    ("paper", (800, 800), (400, 400), (200, 400, 1600))])
def test_widths_keep_the_papers_ratios(variant, widths, rates_widths, sizes):
    _, _, runs = full_runs(variant)
    assert tuple(runs["relu_none"].model.hidden_sizes) == widths
    assert tuple(runs["rates_dropconnect"].model.hidden_sizes) == rates_widths
    assert tuple(runs[f"size{w}_dropout"].model.hidden_sizes[0]
                 for w in dropconnect.get_config(variant).study.sizes) == sizes


def test_the_full_config_pools_its_inputs_and_the_paper_variant_does_not():
    assert (dropconnect.get_config().image_pool,
            dropconnect.get_config("paper").image_pool) == (2, 1)


def test_fig2_runs_take_their_methods_relu_lr0_and_share_it_across_rates():
    config = override(dropconnect.get_config(), ON_DIGITS)
    arms = dropconnect.arms(config)
    choices = {arm.name: {"learning_rate": 0.1} for arm in arms if arm.tune}
    choices["relu_dropconnect"] = {"learning_rate": 1.0}
    runs = final_runs(config, arms, choices)
    assert runs["rates_dropconnect"]["optimizer.learning_rate"] == 1.0
    assert runs["size200_dropconnect"]["optimizer.learning_rate"] == 1.0
    assert runs["rates_dropout"]["optimizer.learning_rate"] == 0.1
    assert runs["rates_dropout"]["sweep.hidden_dropout"] == (0.0, *config.study.rates)
    assert runs["rates_dropconnect"]["sweep.dropconnect"] == tuple(config.study.rates)


def test_the_cifar10_variant_is_a_convnet_with_a_dropconnect_head():
    _, _, runs = full_runs("cifar10", lr0=0.01)
    cell = runs["relu_dropconnect"]
    assert (cell.model.name, tuple(cell.model.hidden_sizes), cell.model.dropconnect) == (
        "convnet", (512, 512), 0.5)


@pytest.mark.parametrize("study, message", [
    ({"parts": ("sizes",)}, "must include 'table'"),
    ({"parts": ("table", "figure")}, "must name some of"),
    ({"activations": ("gelu",)}, "study.activations"),
    ({"activations": ("tanh",)}, "must include 'relu'"),
    ({"methods": ("none", "dropout")}, "must include 'relu'"),
])
def test_bad_study_settings_are_errors_before_anything_trains(tmp_path, study, message):
    config = override(dropconnect.get_config("smoke"),
                      {f"study.{key}": value for key, value in study.items()})
    with pytest.raises(StudyConfigError, match=message):
        run(dropconnect.STUDY, config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_each_activation_is_claimed_in_the_papers_direction():
    claims = {c.name: c for c in dropconnect.claims(dropconnect.get_config())}
    assert [c.name for c in claims.values() if c.primary] == ["relu_dropconnect_below_none"]
    assert {a: claims[f"{a}_dropconnect_vs_dropout"].expect for a in dropconnect.ACTIVATIONS} == {
        "relu": "below", "sigmoid": "above", "tanh": "below"}
    assert claims["relu_gaussian"].gate is None
    assert len(claims) == 3 * 5


def curves(arm, train, test, seeds=(0, 1, 2)):
    """Constructed history rows: ``train``/``test`` accuracy at steps 0, 100, …, per seed
    (a seed's offset of 0.001·seed keeps the paired differences from being constant)."""
    return [{"arm": arm, "seed": seed, "member": seed, "step": 100 * t,
             "accuracy_on_train": a + 0.001 * seed, "accuracy": b + 0.001 * seed}
            for seed in seeds for t, (a, b) in enumerate(zip(train, test, strict=True))]


def constructed(overfitting: bool):
    """relu cells: DropConnect and dropout plateaued at 86–86.5% (DropConnect ahead on every
    seed); the plain net at 84%, having peaked at 85% (``overfitting``) or still rising."""
    flat = [0.5] + [0.8] * 4 + [0.86] * 6
    plain_test = ([0.5, 0.8, 0.85, 0.85, 0.84, 0.84, 0.84, 0.84, 0.84, 0.84, 0.84]
                  if overfitting else [0.5, 0.6, 0.65, 0.7, 0.72, 0.74, 0.76, 0.78, 0.8, 0.82,
                                       0.84])
    history = [*curves("relu_none", [1.0] * 11, plain_test),
               *curves("relu_dropout", [0.95] * 11, flat),
               *curves("relu_dropconnect", [0.95] * 11, [v + 0.005 for v in flat])]
    final = [{"arm": arm, "seed": s, "error": 1 - (rows[-1]["accuracy"] + 0.001 * s)}
             for arm, rows in (("relu_none", [{"accuracy": 0.84}]),
                               ("relu_dropout", [{"accuracy": 0.86}]),
                               ("relu_dropconnect", [{"accuracy": 0.865}]))
             for s in (0, 1, 2)]
    config = override(dropconnect.get_config(), {
        "study.activations": ("relu",), "study.methods": ("none", "dropout", "dropconnect"),
        "study.parts": ("table",)})
    for row in final:
        row[dropconnect.gaussian_column(1000)] = row["error"] + 0.002 + 0.0001 * row["seed"]
    return config, constructed_results(final, history, config=config)


@pytest.mark.parametrize("overfitting, outcome", [(True, "holds"), (False, "not testable")])
def test_a_regularization_claim_needs_the_plain_net_to_overfit(overfitting, outcome):
    config, results = constructed(overfitting)
    verdicts = {v.claim.name: v for v in evaluate(dropconnect.claims(config), results)}
    assert verdicts["relu_dropconnect_below_none"].outcome == outcome
    assert verdicts["relu_dropconnect_vs_dropout"].outcome == outcome
    # Gaussian against mean inference reads one net twice and needs no regime.
    assert verdicts["relu_gaussian"].outcome == "does not hold"
