"""The benchmarks: every one runs at its ``--smoke`` size (seconds, synthetic or digits data, no
PyTorch) and writes its JSON and markdown report with the rows it measures, so an engine change
cannot silently break one; the runner's medians and per-round ratios and the table writer on
constructed inputs; the engine seams the benchmarks use instead of its private names."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_config

from benchmarks import common, report, runner
from bnreg import engine

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
# Each benchmark → (its results' name at --smoke, the rows its smoke run measures). Longest
# first: they run two at a time, in the background, while the other tests run.
SMOKE_ROWS = {
    "train_throughput": ("train_throughput", {
        "bnreg_1", "flax_loop", "flax_scan", "peak", "2dev_sharded/single", "2dev_sharded/peak",
        "2dev_sharded/many"}),
    "convnet_throughput": ("convnet_throughput_smoke", {"bnreg", "bnreg_unrolled",
                                                        "bnreg_unrolled_max_pool"}),
    "bn_mnist_study": ("bn_mnist_study", {"concurrent"}),
    "dropconnect_throughput": ("dropconnect_throughput", {"dropconnect_16bit", "dropout",
                                                          "dropconnect_members"}),
    "dropout_p_members": ("dropout_p_members", {"one_program", "one_by_one"}),
    "dropout_throughput": ("dropout_throughput", {"dropout", "dropout_16bit", "no_dropout",
                                                  "peak"}),
    "data_parallel": ("data_parallel", {"data=1", "data=2"}),
}
LIBRARY = {"__init__", "common", "runner", "report", "torch_peers"}  # not benchmarks
PYTORCH_ONLY = {"torch_ema_vs_alg2"}  # a cross-check that needs PyTorch even at --smoke


def run_smoke(name: str, out: Path) -> subprocess.CompletedProcess:
    """``python -m benchmarks.<name> --smoke --out <out>``; XLA compiles without optimizing (a
    smoke run checks that a benchmark works, not its speed: half the time)."""
    env = dict(os.environ, PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_backend_optimization_level=0")
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--smoke", "--out",
                           str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every benchmark's smoke run, two at a time in the background: name → (future, out)."""
    out = tmp_path_factory.mktemp("smoke")
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {name: (pool.submit(run_smoke, name, out / name), out / name)
               for name in SMOKE_ROWS}


@pytest.fixture(scope="module")
def committed_results():
    """The committed results' modification times, before any smoke run."""
    return {path: path.stat().st_mtime for path in (BENCHMARKS / "results").rglob("*")}


def test_every_benchmark_has_a_smoke_test():
    modules = {path.stem for path in BENCHMARKS.glob("*.py")} - LIBRARY
    assert modules == set(SMOKE_ROWS) | PYTORCH_ONLY


@pytest.mark.integration
@pytest.mark.parametrize("name", list(SMOKE_ROWS))
def test_benchmark_runs_at_smoke_size_and_reports_its_rows(committed_results, smoke_runs, name):
    future, out = smoke_runs[name]
    completed = future.result()
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    results_name, rows = SMOKE_ROWS[name]
    result = json.loads((out / f"{results_name}.json").read_text())
    assert result["benchmark"] == name
    measured = result["measurement"]["rows"]
    assert set(measured) == rows
    assert all(row["rate"] > 0 and len(row["turns"]) == result["measurement"]["rounds"]
               for row in measured.values())
    if name == "train_throughput":  # the members spread over the worker's two devices
        assert result["workers"]["2dev_sharded"][0]["mesh"] == {"members": 2, "data": 1}
    markdown = (out / f"{results_name}.md").read_text()
    assert markdown == report.render(result)
    assert markdown.startswith(f"# {result['title']}") and "|---|" in markdown
    assert committed_results == {path: path.stat().st_mtime
                                 for path in (BENCHMARKS / "results").rglob("*")}


def test_the_pytorch_cross_check_runs_at_smoke_size(tmp_path):
    pytest.importorskip("torch")
    completed = run_smoke("torch_ema_vs_alg2", tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert len(json.loads((tmp_path / "torch_ema_vs_alg2.json").read_text())["runs"]) == 2


def imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_benchmarks_import_no_other_benchmark_no_private_engine_name_and_no_torch_up_front():
    benchmarks = {f"benchmarks.{name}" for name in (*SMOKE_ROWS, *PYTORCH_ONLY)}
    for path in BENCHMARKS.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not imports(tree) & benchmarks, path.name
        attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not attributes & {"_arrays", "_chunk", "_evaluate", "_statistics"}, path.name
        assert not {name for name in imports(tree) if "mock" in name}, path.name
        top_level = imports(ast.Module([node for node in tree.body
                                        if isinstance(node, ast.Import | ast.ImportFrom)], []))
        assert "torch" not in top_level, path.name  # PyTorch stays optional


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def scripted(seconds: list[float], calls: list[str], name: str, **peer) -> runner.Peer:
    """A peer whose turns take ``seconds`` in turn (its warm-up first) and that logs its calls."""
    times = iter(seconds)

    def run(steps: int) -> runner.Turn:
        calls.append(name)
        return runner.Turn(next(times), 0.5 * steps)

    return runner.Peer(run, name, **peer)


def test_median_is_the_middle_turn_and_the_slower_middle_one_of_an_even_count():
    assert runner.median_index([3.0, 1.0, 2.0]) == 2
    assert runner.median_index([1.0, 4.0, 2.0, 3.0]) == 3  # 3 s, not the mean of 2 and 3


def test_measure_warms_up_alternates_the_order_and_takes_medians_and_per_round_ratios():
    calls: list[str] = []
    peers = {"a": scripted([9.0, 1.0, 2.0, 4.0], calls, "a"),
             "b": scripted([9.0, 2.0, 2.0, 2.0], calls, "b", work_per_step=2)}
    measured = runner.measure(peers, 10, 3, ratios=[("a", "b"), ("a", "missing")],
                              log=lambda _: None)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then round robin
    a, b = measured["rows"]["a"], measured["rows"]["b"]
    assert a["warm_up_s"] == 9.0 and a["rate"] == 10 / 2.0 and b["rate"] == 20 / 2.0
    assert (a["slowest"], a["fastest"]) == (10 / 4.0, 10 / 1.0)
    assert a["cores_used"] == pytest.approx(15 / 7)
    ratio = measured["ratios"]["a/b"]
    # Per round: (10/1)/(20/2) = 1, (10/2)/(20/2) = 0.5, (10/4)/(20/2) = 0.25.
    assert ratio == {"of_medians": 0.5, "median": 0.5, "min": 0.25, "max": 1.0}
    assert set(measured["ratios"]) == {"a/b"}


def test_a_fixed_amount_of_work_per_turn_and_an_untimed_peer_are_measured_by_wall_time():
    peak = runner.Peer(lambda steps: None, work_per_turn=3.0, unit="GFLOP/s")
    assert peak.work(100) == 3.0
    turn = runner.timed_turn(peak.run, 100)
    assert turn.seconds > 0 and turn.info is None
    row = runner.summarize([runner.Turn(2.0, 1.0, {"x": 1}), runner.Turn(1.0, 1.0)], 6.0)
    assert row["rate"] == 3.0 and row["median_turn"] == 0  # the slower of two
    assert row["turns"] == [{"seconds": 2.0, "cpu_seconds": 1.0, "info": {"x": 1}},
                            {"seconds": 1.0, "cpu_seconds": 1.0}]


# --------------------------------------------------------------------------------------------
# The table writer
# --------------------------------------------------------------------------------------------


def test_cells_format_values_ranges_and_missing_values():
    assert report.cell(1.2345, "{:.2f}×") == "1.23×"
    assert report.cell([1, 2.5], "{:.0f}–{:.1f}") == "1–2.5"
    assert report.cell(None, "{:.2f}") == "—"
    assert report.cell("text", "{}") == "text"


def test_a_report_is_rendered_from_its_json_alone(tmp_path):
    result = report.start("example", "An example", steps=10)
    result.update(other_load="none above 20% CPU", text=["A paragraph."], notes=["A note."],
                  tables=[report.table([("row", "row", "{}"), ("rate", "steps/s", "{:.1f}")],
                                       [{"row": "a", "rate": 12.34}, {"row": "b"}], title="T")])
    path = report.finish(result, tmp_path, "example")
    result["other_load_after"] = "none above 20% CPU"
    path.write_text(json.dumps(result))
    report.main([str(path)])
    markdown = path.with_suffix(".md").read_text()
    assert markdown.startswith("# An example\n\nMeasured ")
    assert "A paragraph.\n\n## T\n\n| row | steps/s |\n|---|---|\n| a | 12.3 |\n| b | — |" \
        in markdown
    assert markdown.endswith("- A note.\n") and "Other processes were busy" not in markdown
    result["other_load"] = "python -m pytest (99% CPU)"
    assert "**Other processes were busy during this run**" in report.render(result)


def test_a_ratio_in_words_names_the_target_met_or_not():
    ratio = {"of_medians": 2.0, "median": 1.9, "min": 1.5, "max": 2.5}
    assert report.ratio_text(ratio, 2.5) == ("**2.00×** (per round 1.90×, 1.50–2.50) against "
                                             "the target 2.5×: NOT met")
    assert report.ratio_text(ratio, 1).endswith(": met") and report.ratio_text(None) == \
        "— (not measured)"


# --------------------------------------------------------------------------------------------
# The engine seams the benchmarks use
# --------------------------------------------------------------------------------------------


def test_build_takes_loaded_data_and_checks_it():
    data = common.synthetic_run_data(num_train=300, num_test=50)
    built = engine.build(tiny_config(), jax.devices()[:1], data=data)  # digits not loaded
    assert built.data is data and built.split == "test"
    with pytest.raises(ValueError, match="batch_size"):
        engine.build(tiny_config(batch_size=400), data=data)


def test_lower_train_gives_the_chunk_for_memory_and_cost_analysis_without_running_it():
    data = common.synthetic_run_data(num_train=300, num_test=50)
    built = engine.build(tiny_config(), jax.devices()[:1], data=data)
    state, order = built.init(), built.empty_order()
    compiled = built.lower_train(state, order, 2).compile()
    assert compiled.memory_analysis().temp_size_in_bytes > 0
    assert compiled.cost_analysis()
    _, _, losses = built.train(state, order, 2)  # neither was donated to the lowering
    assert losses.shape == (2, 1) and np.isfinite(np.asarray(losses)).all()
