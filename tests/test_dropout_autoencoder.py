"""The dropout autoencoder study (experiments/dropout_autoencoder.py): end to end in smoke size,
the hidden activity against direct NumPy computations, dropout off at evaluation, Fig. 7's tiles,
the choice on validation and the verdicts."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, run_smoke_study, tiny_config

from bnreg import engine
from bnreg.config import override
from experiments import dropout_autoencoder as study

AUTOENCODER = {
    "task.name": "reconstruction", "model.name": "autoencoder", "model.norm": None,
    "model.activation": "relu", "model.hidden_sizes": (12,), "probe.layers": (),
    "evaluation.final": (),
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropout_autoencoder_smoke")
    return workdir, run_smoke_study("dropout_autoencoder", workdir)


@pytest.mark.integration
@pytest.mark.parametrize("name", study.FIGURES)
def test_smoke_study_writes_valid_figures(smoke_run, name):
    workdir, stdout = smoke_run
    assert_figure(workdir / name, stdout)


@pytest.mark.integration
def test_smoke_results_give_both_nets_and_every_verdict(smoke_run):
    workdir, stdout = smoke_run
    results = (workdir / "results.md").read_text()
    assert results in stdout
    for net in study.NETS:
        assert f"| {study.LABELS[net]} | " in results
    for _, _, claim in study.SPARSITY_CLAIMS:
        assert f"- {claim}: " in results
    assert "- reconstruction error, dropout − no dropout: " in results


def test_each_net_trains_at_its_own_chosen_rate_and_the_nets_pair_by_seed():
    config = study.get_config("smoke")
    for chosen in ({"no_dropout": 0.1, "dropout": 0.01}, {"no_dropout": 0.1, "dropout": 0.1}):
        members = engine.members_from_config(override(config, study.final_overrides(config,
                                                                                   chosen)))
        rows = [members.member(i) for i in range(len(members))]
        assert len(rows) == len(study.NETS) * len(config.sweep.seed)
        for net, rate in study.NETS.items():
            mine = [row for row in rows if row["hidden_dropout"] == rate]
            assert {row["learning_rate"] for row in mine} == {chosen[net]}
            assert sorted(row["seed"] for row in mine) == sorted(config.sweep.seed)


def test_the_sweep_crosses_every_rate_with_both_nets():
    config = study.get_config("smoke")
    members = engine.members_from_config(override(config, study.sweep_overrides(config)))
    pairs = {(members.member(i)["learning_rate"], members.member(i)["hidden_dropout"])
             for i in range(len(members))}
    assert pairs == {(lr, rate) for lr in config.study.sweep_learning_rates
                     for rate in study.NETS.values()}


def sweep_table(errors: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"hidden_dropout": study.NETS[net], "learning_rate": lr, "seed": seed,
         "reconstruction_error": error}
        for (net, lr), values in errors.items() for seed, error in enumerate(values)
    ])


def test_choose_takes_each_nets_lowest_mean_validation_error_and_never_a_diverged_rate():
    sweep = sweep_table({
        ("no_dropout", 0.01): [5.0, 5.0], ("no_dropout", 0.1): [4.0, np.nan],
        ("dropout", 0.01): [6.0, 6.2], ("dropout", 0.1): [6.5, 5.0],
    })
    assert study.choose(sweep) == {"no_dropout": 0.01, "dropout": 0.1}


def test_choose_refuses_a_net_whose_every_rate_diverged():
    sweep = sweep_table({("no_dropout", 0.01): [5.0], ("dropout", 0.01): [np.nan]})
    with pytest.raises(ValueError, match=r"dropout, p = 0\.5 autoencoder diverged"):
        study.choose(sweep)


def relu_activations(seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(200, 16))
    values[:, 3] = -1.0  # a dead unit
    values[7] = -1.0  # an image no unit responds to
    return np.maximum(values, 0.0)


def test_activity_measures_equal_direct_numpy_computations():
    activations = relu_activations()
    measures = study.activity_measures(activations)

    def hoyer(rows):
        n = rows.shape[1]
        return np.mean([1.0 if not row.any() else (np.sqrt(n) - np.abs(row).sum()
                                                   / np.sqrt((row**2).sum())) / (np.sqrt(n) - 1)
                        for row in rows])

    expected = {
        "mean_activation": activations.sum() / activations.size,
        "median_unit_mean": np.median(activations.sum(0) / len(activations)),
        "fraction_at_zero": np.count_nonzero(activations == 0) / activations.size,
        "fraction_at_zero_live": (np.count_nonzero(activations == 0) - len(activations))
        / (activations.size - len(activations)),  # one dead unit: len(activations) zeros
        "hoyer": hoyer(activations),
        "hoyer_live": hoyer(np.delete(activations, 3, axis=1)),  # unit 3 is dead
        "dead_units": 1,
    }
    for name, value in expected.items():
        assert measures[name] == pytest.approx(value, rel=1e-12), name


@pytest.fixture(scope="module")
def dropout_engine():
    """Members that differ only in their drop rates (none; 0.2 on the input and 0.5 on the
    hidden units): the same initial weights."""
    config = tiny_config(**AUTOENCODER, **{"sweep.hidden_dropout": (0.0, 0.5),
                                           "sweep.input_dropout": (0.0, 0.2),
                                           "sweep_zip": (("input_dropout", "hidden_dropout"),)})
    run_engine = engine.build(config)
    return run_engine, run_engine.init()


def test_hidden_values_are_the_relu_of_the_first_layer_on_every_test_image(dropout_engine):
    run_engine, state = dropout_engine
    activations = run_engine.hidden_values(state, layer=0)
    images = run_engine.data.evaluation.images.reshape(len(run_engine.data.evaluation.labels), -1)
    assert activations.shape == (2, len(images), 12)
    for member in range(2):
        dense = jax.tree.map(lambda leaf, m=member: np.asarray(leaf[m]), state.params["Dense_0"])
        expected = np.maximum(images @ dense["kernel"] + dense["bias"], 0.0)
        np.testing.assert_allclose(activations[member], expected, rtol=1e-5, atol=1e-5)


def test_dropout_in_the_autoencoder_is_off_at_evaluation(dropout_engine):
    """Same weights, with and without dropout on the input and the hidden units: the
    evaluation and the hidden activity (after the input's dropout) are equal."""
    run_engine, state = dropout_engine
    scored = run_engine.evaluate(state, [run_engine.primary])[run_engine.primary.name]
    np.testing.assert_array_equal(scored["reconstruction_error"][0],
                                  scored["reconstruction_error"][1])
    activations = run_engine.hidden_values(state)
    np.testing.assert_array_equal(activations[0], activations[1])


@pytest.mark.parametrize("kind,split", [("output", "evaluation"), ("activation", "validation")])
def test_hidden_values_refuse_an_unknown_kind_or_split(dropout_engine, kind, split):
    run_engine, state = dropout_engine
    with pytest.raises(ValueError, match="kind must be 'activation' or 'preactivation'"):
        run_engine.hidden_values(state, kind=kind, split=split)


@pytest.mark.parametrize("layer", [1, -2])
def test_hidden_values_refuse_a_layer_the_model_does_not_have(dropout_engine, layer):
    run_engine, state = dropout_engine
    with pytest.raises(ValueError, match="is not one of the model's 1 hidden layers"):
        run_engine.hidden_values(state, layer=layer)


def constructed_study(final: pd.DataFrame, *, units: int = 16,
                      image_shape=(4, 4, 1)) -> study.AutoencoderStudy:
    kernel = np.zeros((int(np.prod(image_shape)), units))
    return study.AutoencoderStudy(
        sweep=study.net_names(sweep_table({(n, 0.1): [1.0] for n in study.NETS})),
        chosen={net: 0.1 for net in study.NETS}, final=final,
        unit_means={net: np.ones((2, units)) for net in study.NETS},
        histograms={net: np.ones((2, 3)) for net in study.NETS}, edges=np.arange(4.0),
        features={net: kernel for net in study.NETS}, image_shape=image_shape,
        summary={"source": "constructed", "num_train_examples": 10,
                 "num_evaluation_examples": 5},
        sweep_summary={"num_train_examples": 8, "num_evaluation_examples": 2})


def test_fig7_has_one_tile_per_unit_with_pixel_r_c_at_r_c():
    """Unit u's only weight is on pixel (u // 4, u % 4) of a 4×4 image: its tile, at grid place
    u, is bright exactly there."""
    units, side = 16, 4
    kernel = np.zeros((side * side, units))
    kernel[np.arange(units), np.arange(units)] = 1.0
    config = study.get_config("smoke")
    constructed = constructed_study(pd.DataFrame(), units=units)
    constructed.features = {net: kernel for net in study.NETS}
    with config.unlocked():
        config.study.feature_tiles = 9
    figure = study.features_figure(config, constructed)
    for ax in figure.axes:
        grid = ax.images[0].get_array().filled(np.nan)
        assert grid.shape == (3 * (side + 1) - 1,) * 2  # 9 tiles: 3 × 3
        for unit in range(9):
            top, left = (unit // 3) * (side + 1), (unit % 3) * (side + 1)
            tile = grid[top:top + side, left:left + side]
            assert np.argwhere(tile == 1.0).tolist() == [[unit // side, unit % side]]


def constructed_final(hoyer_gain: list[float], zero_gain: list[float],
                      mean_change: list[float]) -> pd.DataFrame:
    rows = []
    for seed, (hoyer, zero, mean) in enumerate(zip(hoyer_gain, zero_gain, mean_change,
                                                   strict=True)):
        base = {"seed": seed, "loss": 100.0, "reconstruction_error": 10.0 + seed,
                "median_unit_mean": 1.0, "dead_units": 0, "fraction_at_zero_live": 0.3,
                "hoyer_live": 0.2}
        rows.append({**base, "net": "no_dropout", "hidden_dropout": 0.0, "learning_rate": 0.1,
                     "hoyer": 0.3, "fraction_at_zero": 0.4, "mean_activation": 2.0})
        rows.append({**base, "net": "dropout", "hidden_dropout": 0.5, "learning_rate": 0.1,
                     "hoyer": 0.3 + hoyer, "fraction_at_zero": 0.4 + zero,
                     "mean_activation": 2.0 + mean})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("hoyer,zero,mean,outcomes", [
    ([0.10, 0.11, 0.09], [0.05, 0.06, 0.04], [-1.3, -1.2, -1.4],
     ("**holds**", "not resolved", "**holds**", "not resolved", "**holds**")),
    ([-0.10, -0.11, -0.09], [0.05, -0.06, 0.01], [1.3, 1.2, 1.4],
     ("**does not hold**", "not resolved", "not resolved", "not resolved",
      "**does not hold**")),
])
def test_verdicts_read_the_paired_intervals(tmp_path, hoyer, zero, mean, outcomes):
    final = constructed_final(hoyer, zero, mean)
    path = study.write_results(study.get_config("smoke"), constructed_study(final), tmp_path)
    results = path.read_text()
    for (_, _, claim), outcome in zip(study.SPARSITY_CLAIMS, outcomes, strict=True):
        assert f"- {claim}: {outcome} — " in results
    assert "- reconstruction error, dropout − no dropout: +0.00 ± 0.00 (95% interval" in results
