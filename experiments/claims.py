"""The claims page: ``experiments/results/CLAIMS.md``, one row per paper claim of every study,
generated from each study's committed records (design §9).

Command::

  python -m experiments.claims            # rewrites experiments/results/CLAIMS.md
  python -m experiments.claims --check    # exits 1 if the page differs from its records'

A study on the study layer (a module with ``STUDY``) contributes its claims' verdicts, computed
from ``experiments/results/<its results dir>/records``; a study not yet rerun on it declares its
paper claims (``CLAIMS``, :class:`bnreg.study.Untested`), which the page lists as not yet tested in
their regime — a claim never disappears from the page.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bnreg.study import claims_page, verdicts_of

RESULTS = Path(__file__).resolve().parent / "results"
PAGE = RESULTS / "CLAIMS.md"
# Each study and the directory of its committed results (on the offline dataset).
STUDIES = {
    "bn_mnist": "bn_fashion_mnist",
    "bn_ema_momentum": "bn_ema_momentum_fashion_mnist",
    "bn_accelerate": "bn_accelerate_fashion_mnist",
    "dropout_nets": "dropout_nets_fashion_mnist",
    "dropout_p": "dropout_p_fashion_mnist",
    "dropout_data_size": "dropout_data_size_fashion_mnist",
    "dropout_autoencoder": "dropout_autoencoder_fashion_mnist",
    "dropconnect": "dropconnect_fashion_mnist",
}


def page(results: Path = RESULTS) -> str:
    """CLAIMS.md's text from the records under ``results``."""
    entries = []
    for name, directory in STUDIES.items():
        module = importlib.import_module(f"experiments.{name}")
        link = f"{directory}/results.md"
        if hasattr(module, "STUDY"):
            verdicts, study_results = verdicts_of(module.STUDY, results / directory / "records")
            entries.append((name, link, verdicts, study_results))
        else:
            entries.append((name, link, module.CLAIMS, None))
    return claims_page(entries)


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print(f"{PAGE} differs from what the records give: run python -m experiments.claims")
            return 1
        return 0
    PAGE.write_text(text)
    print(f"Wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
