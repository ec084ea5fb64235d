"""Tables, statistics over seeds, verdicts and markdown (bnreg/analysis.py), on constructed
records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bnreg import analysis

REPO = Path(__file__).resolve().parents[1]


def records(steps=(0, 10, 20), members=((0, 1), (1, 2)), **fields):
    """History records, one per (step, member): ``members`` are (member, seed) pairs; accuracy
    is ``0.1 · member + step / 100``."""
    return [
        {"step": step, "member": member, "seed": seed, "split": "test", "learning_rate": 0.1,
         "accuracy": 0.1 * member + step / 100, "probe": [[step, member], [0.0, 1.0]], **fields}
        for step in steps
        for member, seed in members
    ]


@pytest.mark.slow
def test_importing_the_analysis_loads_neither_matplotlib_absl_nor_the_engine():
    # `import bnreg` loads jax and optax, and optax loads absl.logging: count only what
    # bnreg.analysis adds on top of the package.
    code = (
        "import sys, bnreg; before = set(sys.modules); import bnreg.analysis; "
        "added = set(sys.modules) - before; "
        "print(sorted(m for m in added if m.split('.')[0] in ('matplotlib', 'absl') "
        "or m in ('bnreg.train', 'bnreg.engine')))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


# Tables.


def write_history(workdir: Path, lines: list[str]) -> None:
    (workdir / "metrics.jsonl").write_text("".join(lines))


def test_history_has_one_row_per_line_and_keeps_list_valued_fields(tmp_path):
    write_history(tmp_path, [json.dumps(r) + "\n" for r in records()])
    frame = analysis.history(tmp_path)
    assert len(frame) == 6
    assert frame["probe"].iloc[0] == [[0, 0], [0.0, 1.0]]


def test_history_ignores_a_last_line_cut_by_a_kill(tmp_path):
    lines = [json.dumps(r) + "\n" for r in records()]
    write_history(tmp_path, [*lines, lines[0][: len(lines[0]) // 2]])
    assert len(analysis.history(tmp_path)) == len(lines)


def test_history_refuses_an_invalid_line_before_the_last(tmp_path):
    lines = [json.dumps(r) + "\n" for r in records()]
    write_history(tmp_path, [lines[0], "{not json\n", *lines[1:]])
    with pytest.raises(ValueError, match="line 2"):
        analysis.history(tmp_path)


def test_a_missing_run_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory"):
        analysis.history(tmp_path / "nowhere")


def test_finals_has_one_row_per_member_with_every_evaluator(tmp_path):
    members = [{"member": m, "seed": m + 1, "accuracy_ema": 0.8, "accuracy_population": 0.9}
               for m in range(3)]
    (tmp_path / "summary.json").write_text(json.dumps({"dataset": "digits", "members": members}))
    frame = analysis.finals(tmp_path)
    assert frame["member"].tolist() == [0, 1, 2]
    assert {"accuracy_ema", "accuracy_population"} <= set(frame.columns)


def test_table_turns_missing_fields_and_none_into_nan():
    frame = analysis.table([{"step": 0, "train_loss": None}, {"step": 10, "train_loss": 0.3,
                                                                "extra": 1.0}])
    assert frame["train_loss"].isna().tolist() == [True, False]
    assert frame["extra"].isna().tolist() == [True, False]


def test_combine_labels_each_row_with_its_frames_key_in_the_first_column():
    frames = {"bn": analysis.table(records()), "no_bn": analysis.table(records(steps=(0,)))}
    combined = analysis.combine(frames)
    assert combined.columns[0] == "run"
    assert combined["run"].tolist() == ["bn"] * 6 + ["no_bn"] * 2


def test_combine_refuses_a_column_that_already_exists():
    with pytest.raises(ValueError, match="another column"):
        analysis.combine({"bn": analysis.table(records())}, column="split")


# Statistics over seeds.


@pytest.mark.parametrize(
    "values, expected", [([1.0, 3.0], (2.0, np.sqrt(2.0))), ([5.0], (5.0, 0.0)),
                         (np.array([1.0, 2.0, 3.0, 4.0]), (2.5, np.std([1, 2, 3, 4], ddof=1)))]
)
def test_mean_std_is_the_sample_std_and_zero_for_one_value(values, expected):
    assert analysis.mean_std(values) == pytest.approx(expected)


@pytest.mark.parametrize("values", [[], [1.0, np.nan], [[1.0, 2.0], [3.0, 4.0]]])
def test_mean_std_refuses_no_values_nan_and_more_than_one_per_seed(values):
    with pytest.raises(ValueError):
        analysis.mean_std(values)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("values", [[1.0, 2.0, 3.0], [0.1, 0.3, 0.2, 0.5, 0.45]])
def test_confidence_interval_is_the_student_t_interval_of_the_mean(values, level):
    n = len(values)
    half = stats.t.ppf((1 + level) / 2, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
    expected = (np.mean(values), np.mean(values) - half, np.mean(values) + half)
    assert analysis.confidence_interval(values, level) == pytest.approx(expected)


def test_one_value_bounds_nothing():
    assert analysis.confidence_interval([0.4]) == (0.4, -np.inf, np.inf)


def describe_frame() -> pd.DataFrame:
    rows = [
        {"net": net, "learning_rate": lr, "seed": seed, "accuracy": 0.5 + 0.1 * seed + lr}
        for net in ("no_bn", "bn")
        for lr in (1.0, 0.1)
        for seed in (1, 2, 3)
    ]
    return analysis.table(rows)


def test_describe_has_one_row_per_group_of_two_columns_sorted():
    summary = analysis.describe(describe_frame(), "accuracy", ["net", "learning_rate"])
    assert summary.columns.tolist() == ["net", "learning_rate", "n", "mean", "std", "low", "high"]
    assert list(zip(summary["net"], summary["learning_rate"], strict=True)) == [
        ("bn", 0.1), ("bn", 1.0), ("no_bn", 0.1), ("no_bn", 1.0)
    ]
    assert summary["n"].tolist() == [3] * 4


def test_describe_takes_one_columns_name_as_that_column():
    frame = describe_frame()
    pd.testing.assert_frame_equal(
        analysis.describe(frame, "accuracy", "net"), analysis.describe(frame, "accuracy", ["net"])
    )


def test_describe_states_each_groups_statistics_of_the_scaled_value():
    frame = describe_frame()
    summary = analysis.describe(frame, "accuracy", ["net", "learning_rate"], scale=100)
    group = 100 * analysis.select(frame, net="bn", learning_rate=0.1)["accuracy"]
    mean, low, high = analysis.confidence_interval(group)
    row = summary.iloc[0]
    assert (row["mean"], row["std"], row["low"], row["high"]) == pytest.approx(
        (mean, analysis.mean_std(group)[1], low, high)
    )


def test_describe_names_the_group_that_holds_nan():
    frame = describe_frame()
    frame.loc[0, "accuracy"] = np.nan
    with pytest.raises(ValueError, match="'net': 'no_bn'"):
        analysis.describe(frame, "accuracy", ["net", "learning_rate"])


def test_curves_stack_members_in_member_order_whatever_the_row_order():
    frame = analysis.table(records(members=((1, 2), (0, 1)))).sample(frac=1.0, random_state=0)
    steps, accuracy = analysis.curves(frame, "accuracy")
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_allclose(accuracy, [[0.0, 0.1, 0.2], [0.1, 0.2, 0.3]])


def test_curves_stack_list_valued_fields_into_trailing_axes():
    _, probe = analysis.curves(analysis.table(records()), "probe")
    assert probe.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(probe[1, 2], [[20, 1], [0, 1]])


@pytest.mark.parametrize(
    "rows, message",
    [
        (records(members=((0, 1),)) + records(steps=(0, 10), members=((1, 2),)),
         "different steps"),
        (records() + records(), "several rows at step"),
        ([], "no rows"),
    ],
)
def test_curves_refuse_members_at_different_steps_repeated_steps_and_no_rows(rows, message):
    frame = analysis.table(rows) if rows else pd.DataFrame(columns=["member", "step", "accuracy"])
    with pytest.raises(ValueError, match=message):
        analysis.curves(frame, "accuracy")


def test_curves_name_the_available_columns_when_the_value_is_missing():
    with pytest.raises(KeyError, match=r"columns: .*'accuracy'"):
        analysis.curves(analysis.table(records()), "test_accuracy")


def test_select_keeps_the_rows_whose_columns_equal_the_values():
    frame = analysis.table(records(learning_rate=0.1) + records(learning_rate=1.0))
    selected = analysis.select(frame, learning_rate=0.1, member=1, split="test")
    assert len(selected) == 3
    assert set(selected["learning_rate"]) == {0.1}


def test_select_names_the_columns_when_one_does_not_exist():
    with pytest.raises(KeyError, match=r"columns: .*'learning_rate'"):
        analysis.select(analysis.table(records()), lr=0.1)


def pairs_frame(bn_seeds=(1, 2, 3), no_bn_seeds=(3, 1, 2)) -> pd.DataFrame:
    rows = [{"net": "bn", "seed": s, "accuracy": 0.9 + 0.01 * s} for s in bn_seeds]
    rows += [{"net": "no_bn", "seed": s, "accuracy": 0.8 - 0.02 * s} for s in no_bn_seeds]
    return analysis.table(rows).sample(frac=1.0, random_state=1)


def test_paired_differences_are_first_minus_second_seed_by_seed():
    differences = analysis.paired_differences(
        pairs_frame(), "accuracy", column="net", first="bn", second="no_bn"
    )
    assert differences.index.tolist() == [1, 2, 3]
    assert differences.index.name == "seed"
    np.testing.assert_allclose(differences.to_numpy(), [0.1 + 0.03 * s for s in (1, 2, 3)])


@pytest.mark.parametrize(
    "bn_seeds, no_bn_seeds, second, message",
    [
        ((1, 2, 3), (1, 2), "no_bn", r"only with net == 'bn': \[3\]"),
        ((1, 2, 2), (1, 2), "no_bn", r"seed \[2\] appear more than once"),
        ((1, 2), (1, 2), "baseline", "no rows with net == 'baseline'"),
    ],
)
def test_paired_differences_refuse_unpaired_or_repeated_seeds(
    bn_seeds, no_bn_seeds, second, message
):
    with pytest.raises(ValueError, match=message):
        analysis.paired_differences(
            pairs_frame(bn_seeds, no_bn_seeds), "accuracy", column="net", first="bn",
            second=second,
        )


@pytest.mark.parametrize("threshold, step", [(0.5, 20), (0.1, 0), (0.35, 20), (0.9, None)])
def test_first_step_reaching_is_the_first_evaluation_at_or_above(threshold, step):
    steps, curve = np.array([0, 10, 20, 30]), np.array([0.1, 0.3, 0.5, 0.4])
    assert analysis.first_step_reaching(steps, curve, threshold) == step


# Verdicts.


@pytest.mark.parametrize(
    "gaps, outcome, words",
    [
        ([0.10, 0.12, 0.08], "agree", "they agree within 0.3 points"),
        ([-0.10, -0.12, -0.08], "agree", "they agree within 0.3 points"),
        ([0.19, 0.26, 0.12], "unresolved",
         "not resolved with 3 seeds (the mean is within 0.3 points, the interval crosses 0.3)"),
        ([0.40, 0.20, 0.60], "unresolved",
         "not resolved with 3 seeds (the mean is beyond 0.3 points, the interval crosses 0.3)"),
        ([-0.40, -0.20, -0.60], "unresolved", "not resolved with 3 seeds (the mean is beyond"),
        ([0.50, 0.40, 0.45], "disagree", "**they do not agree within 0.3 points**"),
        ([-0.50, -0.40, -0.45], "disagree", "**they do not agree within 0.3 points**"),
        ([0.1], "unresolved", "not resolved with 1 seed (the mean is within 0.3 points"),
    ],
)
def test_agreement_is_decided_by_the_95_percent_interval_of_the_gap(gaps, outcome, words):
    verdict = analysis.agreement(gaps, 0.3)
    assert (verdict.outcome, verdict.n) == (outcome, len(gaps))
    text = analysis.agreement_text(verdict)
    assert text.startswith(f"{np.mean(gaps):+.2f} ± {np.std(gaps, ddof=len(gaps) > 1):.2f} ")
    assert words in text


@pytest.mark.parametrize(
    "verdict, text",
    [  # lines of the committed experiments/results/bn_ema_momentum_fashion_mnist/results.md
        (analysis.Agreement(0.87, 0.81, -0.13, 1.87, 0.3, 5, "unresolved"),
         "+0.87 ± 0.81 points (95% interval -0.13 to +1.87): not resolved with 5 seeds (the mean "
         "is beyond 0.3 points, the interval crosses 0.3)"),
        (analysis.Agreement(0.03, 0.15, -0.15, 0.22, 0.3, 5, "agree"),
         "+0.03 ± 0.15 points (95% interval -0.15 to +0.22): they agree within 0.3 points"),
        (analysis.Agreement(0.5, 0.05, 0.38, 0.62, 0.3, 3, "disagree"),
         "+0.50 ± 0.05 points (95% interval +0.38 to +0.62): **they do not agree within 0.3 "
         "points**"),
        (analysis.Agreement(0.1, 0.0, -np.inf, np.inf, 0.3, 1, "unresolved"),
         "+0.10 ± 0.00 points (95% interval -inf to +inf): not resolved with 1 seed (the mean is "
         "within 0.3 points, the interval crosses 0.3)"),
    ],
)
def test_agreement_text_is_the_studies_wording_byte_for_byte(verdict, text):
    assert analysis.agreement_text(verdict) == text


def test_agreement_text_names_the_unit_and_level():
    text = analysis.agreement_text(analysis.agreement([0.1, 0.12], 0.5, level=0.9), "%", level=0.9)
    assert "(90% interval" in text
    assert text.endswith("they agree within 0.5 %")


@pytest.mark.parametrize(
    "differences, outcome",
    [([0.5, 0.6, 0.7], "above"), ([-0.5, -0.6, -0.7], "below"), ([0.5, -0.2, 0.9], "unresolved"),
     ([0.5], "unresolved")],
)
def test_difference_is_decided_by_the_side_of_zero_the_interval_lies_on(differences, outcome):
    verdict = analysis.difference(differences)
    assert (verdict.outcome, verdict.n) == (outcome, len(differences))


@pytest.mark.parametrize(
    "differences, words",
    [
        ([0.005, 0.006, 0.007], "+0.60 ± 0.10 points (95% interval +0.35 to +0.85): BN is above "
         "no BN"),
        ([-0.005, -0.006, -0.007], ": BN is below no BN"),
        ([0.005, -0.002, 0.009], ": not resolved with 3 seeds (the interval crosses 0)"),
    ],
)
def test_difference_text_scales_and_states_the_outcome(differences, words):
    verdict = analysis.difference(differences)
    assert words in analysis.difference_text(verdict, scale=100, first="BN", second="no BN")


def test_difference_text_never_prints_minus_zero():
    text = analysis.difference_text(analysis.Difference(-0.001, 0.01, -0.004, 0.002, 3,
                                                        "unresolved"))
    assert text.startswith("+0.00 ± 0.01 points (95% interval +0.00 to +0.00)")


@pytest.mark.parametrize("baseline_learns", [True, False])
def test_above_beyond_noise_counts_the_evaluations_within_the_larger_std(baseline_learns):
    steps = np.array([10, 20, 30])
    baseline = np.array([[0.5, 0.6, 0.7]] * 2) if baseline_learns else np.full((2, 3), 0.1)
    bn = np.array([[0.8, 0.6, 0.9], [0.8, 0.62, 0.9]])
    verdict = analysis.above_beyond_noise(steps, bn, baseline)
    # At step 20 the lead (0.01) is within BN's std (0.014); against 0.1 it is far above.
    np.testing.assert_array_equal(verdict.failing_steps, [20] if baseline_learns else [])
    assert verdict.holds is not baseline_learns
    np.testing.assert_allclose(verdict.margins, np.std(bn, axis=0, ddof=1))


def test_above_beyond_noise_with_one_seed_on_each_side_has_no_margin():
    verdict = analysis.above_beyond_noise([0, 1, 2], [[0.5, 0.41, 0.5]], [[0.4, 0.4, 0.5]])
    np.testing.assert_array_equal(verdict.margins, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(verdict.failing_steps, [2])


def test_above_beyond_noise_counts_a_nan_evaluation_as_failing():
    bn = np.array([[0.9, np.nan, 0.9], [0.9, 0.9, 0.9]])
    verdict = analysis.above_beyond_noise([0, 1, 2], bn, np.full((2, 3), 0.1))
    np.testing.assert_array_equal(verdict.failing_steps, [1])


def test_above_beyond_noise_refuses_curves_of_other_lengths():
    with pytest.raises(ValueError, match="share T"):
        analysis.above_beyond_noise([0, 1], [[0.5, 0.6]], [[0.4, 0.4, 0.5]])


@pytest.mark.parametrize(
    "curve, by, expected",
    [([[0.1, 0.5], [0.1, 0.3]], 0.01, True), ([[0.1, 0.11], [0.1, 0.1]], 0.01, False),
     ([[0.1, 0.5]], 0.5, False), ([[0.5, 0.2]], 0.01, False)],
)
def test_learned_means_the_mean_curve_ended_more_than_by_above_its_start(curve, by, expected):
    assert analysis.learned(np.asarray(curve), by=by) is expected


# Markdown.


@pytest.mark.parametrize(
    "values, options, expected",
    [
        ([1.0, 2.0, 3.0], {}, "2.00 ± 1.00"),
        ([0.885, 0.887], {"scale": 100}, "88.60 ± 0.14"),
        ([0.1, 0.2, 0.3], {"signed": True}, "+0.20 ± 0.10"),
        ([-0.1, -0.2, -0.3], {"signed": True}, "-0.20 ± 0.10"),
        ([-0.001, -0.003], {"signed": True}, "+0.00 ± 0.00"),
        ([-0.001, -0.003], {}, "0.00 ± 0.00"),
        ([0.8859], {"scale": 100, "digits": 1}, "88.6 ± 0.0"),
    ],
)
def test_cell_is_the_mean_and_sample_std_of_the_scaled_values(values, options, expected):
    assert analysis.cell(values, **options) == expected


@pytest.mark.parametrize("seed", range(5))
def test_cell_reproduces_the_studies_cells_byte_for_byte(seed):
    values = np.random.default_rng(seed).uniform(-0.02, 0.99, size=(50, 3))
    for row in values:
        accuracy = 100 * row  # bn_mnist: "{:.2f} ± {:.2f}".format(*mean_std(100 * x))
        mean, std = accuracy.mean(), accuracy.std(ddof=1)
        assert analysis.cell(row, scale=100) == f"{mean:.2f} ± {std:.2f}"
        mean, std = round(float(row.mean()), 2) + 0.0, row.std(ddof=1)  # bn_ema_momentum's _cell
        assert analysis.cell(row, signed=True) == f"{mean:+.2f} ± {std:.2f}"


def test_cell_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        analysis.cell([0.5, np.nan])


def test_markdown_table_is_a_github_table_without_a_trailing_newline():
    text = analysis.markdown_table(["net", "accuracy"], [["bn", "88.59 ± 0.23"], ["no bn", 1.5]])
    assert text == "| net | accuracy |\n|---|---|\n| bn | 88.59 ± 0.23 |\n| no bn | 1.5 |"


@pytest.mark.parametrize("rows", [[["bn"]], [["bn", 1, 2]]])
def test_markdown_table_refuses_rows_of_another_length(rows):
    with pytest.raises(ValueError, match="row 0 has"):
        analysis.markdown_table(["net", "accuracy"], rows)


def test_scores_are_the_mean_and_std_of_each_setting():
    frame = pd.DataFrame({"lr": [0.1, 0.1, 1.0], "accuracy": [0.8, 0.9, 0.5]})
    scores = analysis.scores(frame, "accuracy", "lr")
    assert scores[0.1] == pytest.approx((0.85, np.std([0.8, 0.9], ddof=1)))
    assert scores[1.0] == (0.5, 0.0)


def test_the_best_setting_has_the_highest_mean_and_the_tied_ones_lie_within_the_larger_std():
    scores = {0.1: (0.80, 0.01), 0.5: (0.874, 0.006), 1.0: (0.878, 0.001), 2.0: (0.879, 0.004)}
    assert analysis.best(scores) == 2.0
    assert analysis.tied_with_best(scores) == [0.5, 1.0, 2.0]
    assert analysis.tied_with_best({0.1: (0.8, 0.0), 1.0: (0.9, 0.0)}) == [1.0]


def test_lowest_mean_never_chooses_a_setting_with_a_diverged_seed():
    frame = pd.DataFrame({"lr": [0.1, 0.1, 1.0, 1.0, 3.0, 3.0], "c": [1] * 6,
                          "error": [0.3, 0.3, 0.1, np.nan, 0.2, 0.25]})
    assert analysis.lowest_mean(frame, "error", ["lr", "c"]) == {"lr": 3.0, "c": 1}
    assert analysis.lowest_mean(frame, "error", ["lr"]) == {"lr": 3.0}
    assert analysis.lowest_mean(frame.assign(error=np.nan), "error", ["lr"]) is None
