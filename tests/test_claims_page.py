"""The claims page (experiments/results/CLAIMS.md) and the committed results: regenerated from the
committed records alone they are the committed bytes, and the page lists every declared claim of
every study."""

from __future__ import annotations

import importlib
import shutil

import pytest

from bnreg import study
from experiments import claims

ON_THE_LAYER = [name for name in claims.STUDIES
                if hasattr(importlib.import_module(f"experiments.{name}"), "STUDY")]


def test_the_committed_claims_page_is_what_the_committed_records_give():
    assert claims.PAGE.read_text() == claims.page()


@pytest.mark.parametrize("name", list(claims.STUDIES))
def test_the_page_lists_every_declared_claim_of_every_study(name):
    module = importlib.import_module(f"experiments.{name}")
    directory = claims.STUDIES[name]
    if hasattr(module, "STUDY"):
        config = study.Records(claims.RESULTS / directory / "records").config
        statements = [claim.statement for claim in module.STUDY.claims(config)]
    else:
        statements = [claim.statement for claim in module.CLAIMS]
    rows = [line for line in claims.PAGE.read_text().splitlines()
            if line.startswith(f"| [{name}]({directory}/results.md) |")]
    assert len(rows) == len(statements) > 0
    for statement, row in zip(statements, rows, strict=True):
        assert f"| {statement}" in row


@pytest.mark.integration
@pytest.mark.parametrize("name", ON_THE_LAYER)
def test_a_committed_results_md_and_its_figures_are_what_its_records_give(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    committed = claims.RESULTS / claims.STUDIES[name]
    shutil.copytree(committed / "records", tmp_path / "records")
    outputs = study.analyze(module.STUDY, tmp_path / "records", tmp_path)
    for path in outputs:
        assert path.read_bytes() == (committed / path.name).read_bytes(), path.name
