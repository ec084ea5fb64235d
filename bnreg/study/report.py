"""results.md's shared parts — the claims table, the protocol's paragraph, the machine line — and
the claims page across studies (``experiments/results/CLAIMS.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bnreg import analysis
from bnreg.analysis import markdown_table
from bnreg.study.claims import ALPHA, Verdict
from bnreg.study.results import Results


class Untested(NamedTuple):
    """A paper claim a study has not yet tested on the study layer: it stays on the claims page,
    saying so, until the study is rerun in its regime."""

    name: str
    statement: str
    paper: str
    why: str


def number(value: float, unit: str) -> str:
    """``value`` as results.md writes it in ``unit``: whole steps with thousands separators,
    else two decimals; never ``-0.00``."""
    if unit == "steps":
        return f"{round(value) + 0:,}"
    return f"{round(value, 2) + 0.0:.2f}"


def signed(value: float, unit: str) -> str:
    text = number(value, unit)
    return text if text.startswith("-") else f"+{text}"


def measured(verdict: Verdict, results: Results) -> str:
    """The two sides' means and the paired difference's mean ± std, in the claim's unit."""
    claim = verdict.claim
    unit, scale = claim.first.unit, claim.first.scale
    sides = [scale * float(np.nanmean(m.read(results))) for m in (claim.first, claim.second)]
    text = (f"{number(sides[0], unit)} vs {number(sides[1], unit)}: "
            f"{signed(verdict.mean, unit)} ± {number(verdict.std, unit)} {unit}").rstrip()
    if verdict.censored:
        text += (f" ({verdict.censored} seed{'s' * (verdict.censored != 1)} never reached it, "
                 "counted at the last step)")
    return text


def interval(verdict: Verdict) -> str:
    unit = verdict.claim.first.unit
    if verdict.n < 2:
        return "— (one seed)"
    return f"{signed(verdict.low, unit)} to {signed(verdict.high, unit)}"


def verdict_cell(verdict: Verdict) -> str:
    """The verdict, bold where the data decide; a secondary claim's Holm-adjusted p beside."""
    words = verdict.words
    text = f"**{words}**" if verdict.outcome in ("holds", "does not hold") else words
    if verdict.claim.primary or verdict.outcome == "not testable" or verdict.diverged:
        return text
    return f"{text} (Holm p = {verdict.adjusted_p:.2g})"


def gate_cell(verdict: Verdict) -> str:
    if verdict.gate is None:
        return "—"
    return f"{'passed' if verdict.gate.passed else '**failed**'}: {verdict.gate.numbers}"


def claims_table(verdicts: Sequence[Verdict], results: Results) -> str:
    header = ["claim", "paper", "measured (first vs second: paired difference)",
              "95% interval", "gate", "verdict"]
    rows = [[f"{v.claim.statement}{' (**primary**)' if v.claim.primary else ''}",
             v.claim.paper, measured(v, results), interval(v), gate_cell(v), verdict_cell(v)]
            for v in verdicts]
    return markdown_table(header, rows)


def claims_lines(verdicts: Sequence[Verdict], results: Results) -> list[str]:
    """results.md's claims section: the table, how it was read, and each gate's
    requirement."""
    family = [v for v in verdicts if not v.claim.primary and v.outcome != "not testable"]
    seeds = sorted({v.n for v in verdicts})
    gated: dict[str, list[str]] = {}
    for v in verdicts:
        if v.claim.gate:
            gated.setdefault(v.claim.gate.describe, []).append(v.claim.statement)
    gates = [f"- {describe}; for: {'; '.join(statements)}."
             for describe, statements in gated.items()]
    return [
        "## Claims", "", claims_table(verdicts, results), "",
        f"Each claim is read from the paired per-seed differences first − second "
        f"({' or '.join(map(str, seeds))} seeds; the same seed is the same initial weights and "
        f"data order) and their 95% Student-t interval. The primary claim, named before the "
        f"run, is read at {ALPHA:.0%}; the {len(family)} secondary claims whose gates passed "
        f"are one family, adjusted with Holm–Bonferroni (family-wise {ALPHA:.0%}). A claim "
        "whose regime gate failed is *not testable at this budget*: the runs did not reach "
        "the regime in which the paper made it.", "",
        *(["Regime gates:", "", *gates, ""] if gates else []),
    ]


def cell(values, **kwargs) -> str:
    """:func:`bnreg.analysis.cell` of the seeds that did not diverge, saying how many did (a NaN:
    a net recorded as diverged, ``config.nonfinite = "record"``); "diverged" when all did."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[~np.isnan(values)]
    if not finite.size:
        return "diverged"
    text = analysis.cell(finite, **kwargs)
    diverged = values.size - finite.size
    return text + (f" ({diverged} of {values.size} diverged)" if diverged else "")


def steps_to_thresholds(results: Results, arms: Sequence[str], thresholds: Sequence[float],
                        column: str = "accuracy") -> str:
    """A table of the steps each arm's ``column`` curve needs to reach each threshold: per seed
    the first evaluation at or above it; mean ± std over the seeds that reach it, and how many
    do ("never" when none). Speed without a reference that must plateau."""
    rows = []
    for arm in arms:
        steps, curves = results.curves(arm, column)
        cells = []
        for threshold in thresholds:
            found = [analysis.first_step_reaching(steps, curve, threshold) for curve in curves]
            reached = [step for step in found if step is not None]
            cells.append("never" if not reached else analysis.cell(
                np.asarray(reached, dtype=float), digits=0) + (
                "" if len(reached) == len(found) else f" ({len(reached)}/{len(found)} seeds)"))
        rows.append([results.label(arm), *cells])
    header = ["net", *(f"steps to {100 * t:.4g}%" for t in thresholds)]
    return markdown_table(header, rows)


def machine_line(results: Results) -> str:
    machine = results.machine
    versions = ", ".join(f"{name} {machine[name]}" for name in
                         ("python", "jax", "jaxlib", "flax", "optax", "numpy"))
    # Records made before the CPU's family, flags and cores were recorded name its model only.
    cpu = machine["cpu"] + (f" ({machine['cpu_id']}; {machine['cpu_flags']}; "
                            f"{machine['cores']} cores)" if "cpu_id" in machine else "")
    return (f"Made on: {cpu}, devices {', '.join(machine['devices'])}; {versions}. The same "
            "config reproduces these bytes only where the CPU (family and model, instruction "
            "set), the core count and jax/jaxlib all match, and even then it is not promised; "
            "elsewhere XLA rounds differently, and over many SGD steps the numbers move as "
            "another seed would (the verdicts should not).")


def claims_page(studies: Sequence[tuple[str, str, Sequence[Verdict] | Sequence[Untested],
                                        Results | None]]) -> str:
    """``CLAIMS.md``: one row per claim of every study. ``studies`` holds, per study, its name,
    the link to its results.md, and either its verdicts with their results or its untested
    claims (results None)."""
    rows = []
    for name, link, claims, results in studies:
        for claim in claims:
            if isinstance(claim, Untested):
                rows.append([f"[{name}]({link})", claim.statement, claim.paper, "—", "—",
                             "—", f"not yet tested in its regime: {claim.why}"])
            else:
                rows.append([f"[{name}]({link})", claim.claim.statement
                             + (" (**primary**)" if claim.claim.primary else ""),
                             claim.claim.paper, measured(claim, results), interval(claim),
                             gate_cell(claim), verdict_cell(claim)])
    header = ["study", "claim", "paper", "measured (first vs second: paired difference)",
              "95% interval", "gate", "verdict"]
    return "\n".join([
        "# The papers' claims, measured", "",
        "Generated by `python -m experiments.claims` from each study's committed records "
        "(`experiments/results/<study>_<dataset>/records`); do not edit. One row per claim of "
        "every study: the paper's statement and number, what was measured (the paired "
        "per-seed difference, mean ± std), its 95% interval, the regime gate and the verdict "
        "— *holds*, *does not hold*, *not resolved with N seeds*, or *not testable at this "
        "budget* when the runs did not reach the regime the paper made the claim in. "
        "Secondary claims are Holm-adjusted within their study. The papers' numbers are "
        "MNIST's, CIFAR's or ImageNet's; the measurements are on the dataset each study's "
        "results.md names.", "",
        markdown_table(header, rows), "",
    ])
