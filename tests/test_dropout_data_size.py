"""The data-set size study (experiments/dropout_data_size.py): end to end in smoke size, every
member on its own subset (the two nets of a seed on the same one), early stopping on validation,
and the verdicts on constructed tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_figure, drawn_indices, run_smoke_study

from bnreg import engine
from bnreg.config import override
from experiments import dropout_data_size as study


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dropout_data_size_smoke")
    return workdir, run_smoke_study("dropout_data_size", workdir)


@pytest.mark.integration
def test_smoke_study_writes_the_figure_and_a_verdict_per_size(smoke_run):
    workdir, stdout = smoke_run
    assert_figure(workdir / study.FIGURE, stdout)
    results = (workdir / "results.md").read_text()
    assert results in stdout
    for size in study.get_config("smoke").study.sizes:
        assert f"\n| {size:,} | " in results and f"\n- {size:,} images: dropout " in results
    assert "- Dropout does best against no dropout" in results


def test_every_member_trains_only_on_its_own_subset_and_both_nets_of_a_seed_on_the_same():
    config = override(study.get_config("smoke"), study.run_overrides(study.get_config("smoke")))
    members = engine.members_from_config(config)
    assert len(members) == len(study.NETS) * len(config.study.sizes) * len(config.sweep.seed)
    labels = np.repeat(np.arange(10), 120).astype(np.int32)
    drawn, subsets = drawn_indices(members, labels, config.batch_size, 12)
    by_setting = {}
    for index, subset in enumerate(subsets):
        member = members.member(index)
        assert len(subset) == member["train_subset"]
        assert set(np.asarray(drawn[:, index]).ravel()) <= set(subset.tolist())
        by_setting.setdefault((member["train_subset"], member["seed"]), []).append(index)
    for indices in by_setting.values():
        assert len(indices) == len(study.NETS)  # both nets
        first, *others = indices
        for other in others:
            np.testing.assert_array_equal(subsets[first], subsets[other])
            np.testing.assert_array_equal(drawn[:, first], drawn[:, other])  # the same batches


@pytest.mark.parametrize("sizes", [(50, 500), (500, 500), ()])
def test_bad_sizes_are_an_error(sizes):
    config = study.get_config("smoke")
    with config.unlocked():
        config.study.sizes = sizes
    with pytest.raises(ValueError, match="must be distinct training-set sizes of at least"):
        study.run_overrides(config)


def history_rows(member, net, size, seed, validation, test):
    rates = study.NETS[net]
    return [{"member": member, "step": 100 * step, "input_dropout": rates[0],
             "hidden_dropout": rates[1], "train_subset": size, "seed": seed, "error": v,
             "error_on_test": t} for step, (v, t) in enumerate(zip(validation, test,
                                                                     strict=True))]


def test_early_stopping_reads_the_test_error_at_the_lowest_validation_error():
    history = pd.DataFrame(
        history_rows(0, "no_dropout", 100, 0, [0.5, 0.3, 0.4, 0.3], [0.6, 0.35, 0.2, 0.1])
        + history_rows(1, "dropout", 100, 0, [0.1, 0.4, 0.2, 0.25], [0.6, 0.5, 0.3, 0.2]))
    stopped = study.early_stopped(history).set_index("net")
    # the first of a tie (steps 100 and 300): step 100; step 0 (the untrained net) never
    assert stopped.loc["no_dropout", ["step", "error_on_test"]].tolist() == [100, 0.35]
    assert stopped.loc["dropout", ["step", "error_on_test"]].tolist() == [200, 0.3]
    assert stopped["final_error_on_test"].tolist() == [0.1, 0.2]


def constructed(errors: dict[int, tuple[list[float], list[float]]]) -> study.SizeStudy:
    """Test errors in % per size: (no dropout per seed, dropout per seed)."""
    rows = []
    for size, (plain, dropout) in errors.items():
        for net, values in (("no_dropout", plain), ("dropout", dropout)):
            rows += [{"net": net, "train_subset": size, "seed": seed, "step": 100, "error": 0.1,
                      "error_on_test": v / 100, "final_error_on_test": v / 100}
                     for seed, v in enumerate(values)]
    return study.SizeStudy(pd.DataFrame(rows), pd.DataFrame(), {})


def test_verdicts_on_a_constructed_study():
    lines = "\n".join(study.verdict_lines(constructed({
        100: ([30.0, 31.0, 29.0], [31.0, 32.1, 29.9]),  # dropout hurts: +1
        1_000: ([12.0, 12.5, 11.8], [9.0, 9.6, 8.7]),  # helps most: −3
        50_000: ([5.0, 5.2, 4.9], [4.5, 4.6, 4.5]),  # helps less: about −0.5
    })))
    assert "- 100 images: dropout **hurts** — " in lines
    assert "- 1,000 images: dropout **helps** — " in lines
    assert "- 50,000 images: dropout **helps** — " in lines
    assert "at 1,000 images (-3.00 points;" in lines
    assert "the gain shrinks with more data (the difference at 50,000 minus that at 1,000): " \
           "**holds**" in lines
