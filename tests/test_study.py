"""The study layer (bnreg.study): the protocol's choice and edge flags, the runs arms make, the
claims' verdicts, Holm's adjustment and the regime gates on constructed tables and curves, and
the records' round trip."""

from __future__ import annotations

import gzip

import ml_collections
import numpy as np
import pandas as pd
import pytest
from conftest import constructed_results
from statsmodels.stats.multitest import multipletests

from bnreg.config import default_config
from bnreg.study import (
    PROTOCOL_KEYS,
    Arm,
    Chosen,
    Claim,
    Measure,
    Records,
    Results,
    choose,
    evaluate,
    final,
    gap,
    overfits,
    plateaued,
    steps_to,
)
from bnreg.study import records as records_lib
from bnreg.study.arms import check_arms, final_runs, final_settings, tuning_overrides
from bnreg.study.choice import sweep_lines


def grid_frame(rows):
    """A tuning run's final evaluations: (learning_rate, weight_decay, seed, error) rows."""
    return pd.DataFrame(rows, columns=["learning_rate", "weight_decay", "seed", "error"])


TWO_AXES = Arm("net", "net", tune={"learning_rate": (0.1, 1.0, 10.0), "weight_decay": (0.0, 1e-4)})


def test_the_choice_is_the_lowest_mean_error_over_the_seeds():
    frame = grid_frame([(lr, wd, seed, error) for lr, wd, errors in (
        (0.1, 0.0, (0.30, 0.32)), (1.0, 0.0, (0.20, 0.26)), (10.0, 0.0, (0.50, 0.50)),
        (0.1, 1e-4, (0.31, 0.31)), (1.0, 1e-4, (0.22, 0.21)), (10.0, 1e-4, (0.4, 0.4)))
        for seed, error in enumerate(errors)])
    choice = choose(frame, TWO_AXES, "error")
    assert choice.values == {"learning_rate": 1.0, "weight_decay": 1e-4}


def test_a_setting_that_diverged_on_one_seed_is_never_chosen_even_with_the_lowest_mean():
    frame = grid_frame([(0.1, 0.0, 0, 0.30), (0.1, 0.0, 1, 0.30),
                        (1.0, 0.0, 0, 0.10), (1.0, 0.0, 1, np.nan)])
    arm = Arm("net", "net", tune={"learning_rate": (0.1, 1.0), "weight_decay": (0.0,)})
    choice = choose(frame, arm, "error")
    assert choice.values["learning_rate"] == 0.1
    assert choice.scores.set_index("learning_rate").loc[1.0, "diverged"] == 1


def test_a_grid_where_every_setting_diverged_is_an_error_naming_the_arm():
    frame = grid_frame([(0.1, 0.0, 0, np.nan), (1.0, 0.0, 0, np.nan)])
    arm = Arm("wide", "wide", tune={"learning_rate": (0.1, 1.0), "weight_decay": (0.0,)})
    with pytest.raises(ValueError, match=r"'wide'.*diverged"):
        choose(frame, arm, "error")


@pytest.mark.parametrize("best, edges", [
    ((0.1, 0.0), {"learning_rate": "lowest", "weight_decay": "lowest"}),
    ((1.0, 1e-4), {"weight_decay": "highest"}),
    ((10.0, 0.0), {"learning_rate": "highest", "weight_decay": "lowest"}),
])
def test_a_choice_on_an_edge_is_flagged_on_every_tuned_axis(best, edges):
    frame = grid_frame([(lr, wd, 0, 0.1 if (lr, wd) == best else 0.5)
                        for lr in (0.1, 1.0, 10.0) for wd in (0.0, 1e-4)])
    choice = choose(frame, TWO_AXES, "error")
    assert choice.edges == edges
    lines = "\n".join(sweep_lines([TWO_AXES], {"net": choice}, objective="error"))
    assert lines.count("**Edge**") == len(edges) and lines.count("**← chosen**") == 1


def test_an_axis_with_one_value_is_never_an_edge():
    arm = Arm("net", "net", tune={"learning_rate": (0.1, 1.0, 10.0), "weight_decay": (0.0,)})
    frame = grid_frame([(lr, 0.0, 0, {1.0: 0.1}.get(lr, 0.5)) for lr in (0.1, 1.0, 10.0)])
    assert choose(frame, arm, "error").edges == {}


def study_config(**study):
    config = default_config()
    config.study = ml_collections.ConfigDict({**PROTOCOL_KEYS, **study})
    config.sweep.seed = (0, 1)
    return config


def test_arms_of_one_run_differing_in_one_axis_sweep_it_as_members():
    arms = [Arm("tuned", "tuned", {"model.norm": None}, tune={"learning_rate": (0.1, 1.0)},
                final=False),
            *(Arm(f"bn_{f:g}", f"bn × {f:g}", {"model.norm": "batch"},
                  settings={"learning_rate": Chosen("tuned", "learning_rate", f)}, run="bn")
              for f in (1.0, 5.0, 0.05))]
    runs = final_runs(study_config(), arms, {"tuned": {"learning_rate": 2.0}})
    assert list(runs) == ["bn"]
    assert runs["bn"]["sweep.learning_rate"] == (2.0, 10.0, 0.1)
    assert runs["bn"]["model.norm"] == "batch" and runs["bn"]["validation_fraction"] == 0.0
    assert "sweep_zip" not in runs["bn"]


def test_arms_of_one_run_differing_in_two_axes_zip_them():
    arms = [Arm(name, name, settings={"learning_rate": lr, "max_norm": c}, run="net")
            for name, lr, c in (("a", 0.1, 2.0), ("b", 1.0, 3.0))]
    runs = final_runs(study_config(), arms, {})
    assert runs["net"]["sweep_zip"] == (("learning_rate", "max_norm"),)
    assert runs["net"]["sweep.max_norm"] == (2.0, 3.0)


def test_arms_of_one_run_with_the_same_settings_are_an_error():
    arms = [Arm(name, name, settings={"learning_rate": 0.1}, run="net") for name in ("a", "b")]
    with pytest.raises(ValueError, match="same settings"):
        final_runs(study_config(), arms, {})


@pytest.mark.parametrize("arms, message", [
    ([Arm("a", "a"), Arm("a", "b")], "distinct names"),
    ([Arm("a", "a", tune={"model.norm": (1,)})], "not a member axis"),
    ([Arm("a", "a", settings={"learning_rate": Chosen("b", "learning_rate")})], "does not tune"),
    ([Arm("a", "a", {"model.norm": None}, run="r"), Arm("b", "b", {"model.norm": "batch"},
                                                       run="r")], "not their overrides"),
    ([Arm("a", "a", tune={"learning_rate": (1.0,)}, final=False)], "final phase"),
    ([Arm("a", "a", settings={"learning_rate": 0.1}, run="r"),
      Arm("b", "b", settings={"learning_rate": 1.0}, run="r",
          final_overrides={"evaluation.final": ("gaussian",)})], "not their overrides"),
])
def test_arms_that_cannot_work_together_are_an_error(arms, message):
    with pytest.raises(ValueError, match=message):
        check_arms(arms)


def test_a_tuned_arms_final_settings_are_its_choice_and_the_factors_of_others():
    tuned = Arm("inception", "Inception", tune={"learning_rate": (0.03, 0.1)})
    accelerated = Arm("x5", "x5", settings={"learning_rate": Chosen("inception",
                                                                    "learning_rate", 3.0)})
    choices = {"inception": {"learning_rate": 0.1}}
    assert final_settings(tuned, choices) == {"learning_rate": 0.1}
    # 0.1 × 3 is 0.30000000000000004 in floats: settings are rounded to 12 digits.
    assert final_settings(accelerated, choices) == {"learning_rate": 0.3}


def test_a_tuning_run_crosses_the_grid_with_the_tuning_seeds_on_a_validation_split():
    config = study_config(tune_seeds=(3, 4), tune_steps=100, tune_eval_every=50,
                          validation_fraction=0.25)
    overrides = tuning_overrides(config, Arm("a", "a", {"model.norm": "batch"},
                                             tune={"learning_rate": (0.1, 1.0)}))
    assert overrides["sweep.learning_rate"] == (0.1, 1.0)
    assert overrides["sweep.seed"] == (3, 4) and overrides["validation_fraction"] == 0.25
    assert (overrides["num_steps"], overrides["eval_every"]) == (100, 50)
    assert overrides["nonfinite"] == "record" and overrides["model.norm"] == "batch"


def test_final_overrides_reach_the_final_run_and_not_the_tuning_run():
    arm = Arm("dc", "dc", {"model.dropconnect": 0.5}, tune={"learning_rate": (0.1, 1.0)},
              final_overrides={"evaluation.final": ("gaussian",)})
    config = study_config()
    assert "evaluation.final" not in tuning_overrides(config, arm)
    final = final_runs(config, [arm], {"dc": {"learning_rate": 1.0}})["dc"]
    assert final["evaluation.final"] == ("gaussian",)
    assert final["model.dropconnect"] == 0.5


# Claims and verdicts on constructed results -------------------------------------------------


def constructed(finals: dict[str, list[float]], curves: dict[str, list[list[float]]] | None = None,
                train: dict[str, list[float]] | None = None) -> Results:
    """Results whose arm ``a`` has final ``accuracy`` ``finals[a][seed]`` (and ``curves[a]``
    per seed at steps 0, 10, …, ``train`` its final training accuracy)."""
    train = train or {}
    rows = [{"arm": arm, "seed": seed, "member": seed, "accuracy": value,
             "accuracy_on_train": train.get(arm, values)[seed]}
            for arm, values in finals.items() for seed, value in enumerate(values)]
    history = [{"arm": arm, "seed": seed, "member": seed, "step": 10 * t, "accuracy": value,
                "accuracy_on_train": train.get(arm, [np.nan] * len(per_seed))[seed]}
               for arm, per_seed in (curves or {}).items()
               for seed, curve in enumerate(per_seed) for t, value in enumerate(curve)]
    return constructed_results(rows, history)


def claim(name, expect="above", primary=False, tolerance=0.0, gate=None, first="a",
          second="b") -> Claim:
    return Claim(name, name, "paper", final(first), final(second), expect, tolerance=tolerance,
                 gate=gate, primary=primary)


BASE = [0.80, 0.82, 0.81, 0.83, 0.79]


@pytest.mark.parametrize("first, expect, outcome", [
    ([b + 0.01 for b in BASE], "above", "holds"),
    ([b - 0.01 for b in BASE], "above", "does not hold"),
    ([b - 0.01 for b in BASE], "below", "holds"),
    ([b + d for b, d in zip(BASE, (0.01, -0.01, 0.02, -0.02, 0.0), strict=True)], "above",
     "not resolved"),
])
def test_a_difference_claims_verdict_reads_the_paired_interval(first, expect, outcome):
    (verdict,) = evaluate([claim("c", expect, primary=True)], constructed({"a": first, "b": BASE}))
    assert verdict.outcome == outcome
    assert verdict.n == 5 and (verdict.low > 0 or verdict.high < 0) == (outcome != "not resolved")
    if outcome == "not resolved":
        assert verdict.words == "not resolved with 5 seeds"


@pytest.mark.parametrize("shift, outcome", [
    ((0.001, -0.001, 0.0005, 0.0, -0.0005), "holds"),  # within ±0.3 points
    ((0.02, 0.021, 0.019, 0.02, 0.022), "does not hold"),  # 2 points apart
    ((0.0, 0.006, -0.004, 0.005, -0.002), "not resolved"),  # the interval crosses 0.3
])
def test_an_agreement_claims_verdict_reads_the_interval_against_the_tolerance(shift, outcome):
    first = [b + s for b, s in zip(BASE, shift, strict=True)]
    (verdict,) = evaluate([claim("c", "agree", primary=True, tolerance=0.3)],
                          constructed({"a": first, "b": BASE}))
    assert verdict.outcome == outcome


def test_one_seed_is_never_resolved():
    (verdict,) = evaluate([claim("c", primary=True)], constructed({"a": [0.9], "b": [0.1]}))
    assert verdict.words == "not resolved with 1 seed"


def test_a_failed_gate_makes_a_claim_not_testable_whatever_its_interval():
    curves = {"b": [[0.1, 0.5, 0.6, 0.7, 0.8, 0.9]] * 2}  # still climbing
    gate = plateaued("b", tolerance=0.5)
    results = constructed({"a": [0.95, 0.96], "b": [0.1, 0.1]}, curves)
    (verdict,) = evaluate([claim("c", primary=True, gate=gate)], results)
    assert verdict.outcome == "not testable" and not verdict.gate.passed
    assert verdict.words == "not testable at this budget"
    assert "(≤ 0.5 required)" in verdict.gate.numbers


def test_the_secondary_claims_are_holm_adjusted_as_one_family_and_the_primary_is_not():
    rng = np.random.default_rng(0)
    seeds = 6
    base = rng.normal(0.8, 0.01, seeds)
    finals = {"base": list(base)}
    # Differences of growing effect: p-values from about 0.3 down to about 1e-6.
    for index, effect in enumerate((0.002, 0.004, 0.006, 0.01, 0.03)):
        finals[f"arm{index}"] = list(base + effect + rng.normal(0, 0.004, seeds))
    claims = [claim(f"c{i}", first=f"arm{i}", second="base", primary=i == 4) for i in range(5)]
    verdicts = evaluate(claims, constructed(finals))
    secondary = [v for v in verdicts if not v.claim.primary]
    reference = multipletests([v.p for v in secondary], method="holm")[1]
    np.testing.assert_allclose([v.adjusted_p for v in secondary], reference)
    # Holm by hand: sorted p times (m − rank), cumulative maximum, capped at 1.
    ordered = np.argsort([v.p for v in secondary])
    by_hand = np.maximum.accumulate([min(1.0, (4 - rank) * secondary[i].p)
                                     for rank, i in enumerate(ordered)])
    np.testing.assert_allclose([secondary[i].adjusted_p for i in ordered], by_hand)
    primary = next(v for v in verdicts if v.claim.primary)
    assert primary.adjusted_p == primary.p
    for verdict in secondary:
        assert (verdict.outcome == "holds") == (verdict.adjusted_p < 0.05)


def test_a_claim_significant_alone_is_not_resolved_after_holm():
    # Four secondary claims, each at p ≈ 0.02: alone each would hold, adjusted none does.
    seeds = 5
    base = np.array(BASE)
    noise = np.array([0.002, -0.001, 0.0005, -0.002, 0.0005])
    finals = {"base": list(base), "primary": list(base + 0.1)}
    for index in range(4):
        finals[f"arm{index}"] = list(base + 0.0025 + noise)
    claims = [claim("p", first="primary", second="base", primary=True),
              *(claim(f"c{i}", first=f"arm{i}", second="base") for i in range(4))]
    verdicts = evaluate(claims, constructed(finals))
    for verdict in verdicts[1:]:
        assert 0.01 < verdict.p < 0.05 and verdict.adjusted_p >= 0.05
        assert verdict.outcome == "not resolved"
    assert seeds == verdicts[0].n


def test_claims_need_exactly_one_primary():
    results = constructed({"a": BASE, "b": BASE})
    with pytest.raises(ValueError, match="exactly one primary"):
        evaluate([claim("c"), claim("d")], results)


# Gates on constructed curves ----------------------------------------------------------------


@pytest.mark.parametrize("curve, passed", [
    ([0.5, 0.7, 0.80, 0.801, 0.802, 0.801, 0.803, 0.802, 0.801, 0.802, 0.803], True),
    ([0.5, 0.6, 0.65, 0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84], False),
    ([0.5, 0.7, 0.80, 0.81, 0.82, 0.82, 0.81, 0.80, 0.79, 0.78, 0.77], True),  # declining
])
def test_the_plateau_gate_compares_the_last_fifth_with_the_fifth_before(curve, passed):
    results = constructed({"a": [0.8]}, {"a": [curve]})
    reading = plateaued("a", tolerance=0.5).check(results)
    assert reading.passed is passed


@pytest.mark.parametrize("curve, train_final, passed", [
    ([0.5, 0.8, 0.85, 0.86, 0.85, 0.84, 0.84, 0.83, 0.83, 0.83, 0.83], 0.99, True),
    ([0.5, 0.8, 0.85, 0.86, 0.85, 0.84, 0.84, 0.83, 0.83, 0.83, 0.83], 0.84, False),  # no gap
    ([0.5, 0.6, 0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84, 0.86], 0.99, False),  # peak late
])
def test_the_overfitting_gate_needs_a_gap_and_a_test_curve_past_its_peak(curve, train_final,
                                                                         passed):
    results = constructed({"a": [curve[-1]]}, {"a": [curve]}, train={"a": [train_final]})
    assert overfits("a", margin=2.0).check(results).passed is passed


def test_steps_to_a_reference_count_a_seed_that_never_reaches_it_at_the_last_step():
    results = constructed({"fast": [0.9, 0.9], "slow": [0.8, 0.8]}, {
        "fast": [[0.1, 0.85, 0.9, 0.9], [0.1, 0.5, 0.6, 0.7]],
        "slow": [[0.1, 0.5, 0.8, 0.8], [0.1, 0.5, 0.7, 0.8]],
    })
    measure = steps_to("fast", "slow", target="final")
    np.testing.assert_array_equal(measure.read(results).to_numpy(), [10, 30])
    assert measure.censored(results) == 1
    own = steps_to("slow", "slow", target="max")
    np.testing.assert_array_equal(own.read(results).to_numpy(), [20, 30])


def test_the_gap_measure_is_train_minus_test_per_seed():
    results = constructed({"a": [0.8, 0.7]}, train={"a": [0.9, 0.95]})
    np.testing.assert_allclose(gap("a").read(results).to_numpy(), [0.1, 0.25])


def test_a_measure_of_other_seeds_than_its_counterpart_is_an_error():
    results = constructed({"a": BASE, "b": BASE})
    other = Measure("shifted", lambda r: r.finals("b").rename(lambda seed: seed + 10))
    bad = Claim("c", "c", "paper", final("a"), other, "above", primary=True)
    with pytest.raises(ValueError, match="different seeds"):
        evaluate([bad], results)


# Records -------------------------------------------------------------------------------------


def test_records_are_the_same_bytes_for_the_same_content_and_read_back(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "member": 0, "accuracy": 0.1}\n')
    (run / "summary.json").write_text('{"members": [{"member": 0, "accuracy": 0.9}]}')
    digests = []
    for name in ("first", "second"):
        records_lib.write_run(tmp_path / name, "final", "net", run)
        records_lib.write_study(tmp_path / name, "demo", study_config())
        digests.append((tmp_path / name / "final" / "net" / records_lib.METRICS).read_bytes())
    assert digests[0] == digests[1]
    with gzip.open(tmp_path / "first" / "final" / "net" / records_lib.METRICS) as file:
        assert file.read().decode() == '{"step": 0, "member": 0, "accuracy": 0.1}\n'
    records = Records(tmp_path / "first")
    assert records.study == "demo" and records.runs("final") == ["net"]
    assert records.history("final", "net") == [{"step": 0, "member": 0, "accuracy": 0.1}]
    assert records.config.sweep.seed == (0, 1)  # tuples come back as tuples
    assert records.machine["jax"]
    # What reproducing the bytes needs besides the software: the CPU and the cores.
    assert {"cpu", "cpu_id", "cpu_flags", "cores"} <= set(records.machine)
    assert records.machine["cores"] >= 1


def test_a_directory_without_records_is_an_error_that_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="records directory"):
        Records(tmp_path)


def test_a_claim_on_a_net_that_diverged_on_a_seed_is_not_resolved_and_says_so():
    results = constructed({"a": [0.9, np.nan, 0.91], "b": [0.8, 0.8, 0.81]})
    verdicts = evaluate([claim("p", primary=True, first="b", second="b"),
                         claim("c", first="a", second="b")], results)
    assert verdicts[1].outcome == "not resolved" and verdicts[1].diverged == 1
    assert verdicts[1].words == "not resolved: 1 of 3 seeds diverged"
    assert verdicts[1].adjusted_p == verdicts[1].p == 1.0  # outside the Holm family
