"""The README's API tour runs as written, and its set-up commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


@pytest.mark.integration
def test_readme_python_snippets_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snippets = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(snippets) >= 5
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    finals = namespace["finals"]
    assert len(finals) == 6 and (finals["accuracy_population"] > 0.5).all()
    assert {"accuracy_ema", "accuracy_mc_k50"} <= set(finals)


def test_readme_set_up_commands_name_existing_scripts():
    commands = re.findall(r"^bash (\S+)", README, flags=re.M)
    assert commands[:2] == ["experiments/bn_mnist.sh", "tests/run.sh"]
    for command in commands:
        assert (REPO / command).is_file(), command
    assert "bash tests/run.sh" in (REPO / ".ci" / "run").read_text()
