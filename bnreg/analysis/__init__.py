"""A study's metrics as tables, statistics over seeds, verdicts on claims, and markdown.

Every study reads its runs the same way: :func:`history` (``metrics.jsonl``, one row per
evaluation and member) and :func:`finals` (``summary.json``, one row per member with every final
evaluator) give ``pandas`` tables; :func:`select`, :func:`describe`, :func:`curves` and
:func:`paired_differences` cut them; the verdicts turn per-seed numbers into *holds* / *does not
hold* / *not resolved with N seeds* from a Student-t interval of the mean; :func:`cell` and
:func:`markdown_table` write results.md.

Conventions: a "std" is the sample standard deviation over seeds (ddof=1), 0 for one seed; an
interval is the two-sided Student-t interval of the mean, unbounded for one seed. Statistics
refuse NaN (a diverged seed must be handled, not averaged away). Column sets vary by run
(evaluators, metrics), so nothing here names a metric column.

Modules: ``tables`` (reading runs, cutting tables), ``statistics`` (over seeds), ``verdicts``
(claims from intervals, and their words), ``markdown`` (cells, tables). The package imports
neither matplotlib nor the engine: studies import it at module top.
"""

from bnreg.analysis.markdown import (
    cell,
    markdown_table,
)
from bnreg.analysis.statistics import (
    best,
    confidence_interval,
    describe,
    lowest_mean,
    mean_std,
    scores,
    seed_mean_std,
    seed_values,
    tied_with_best,
)
from bnreg.analysis.tables import (
    METRICS_FILE,
    SUMMARY_FILE,
    combine,
    curves,
    finals,
    first_step_reaching,
    history,
    paired_differences,
    require_columns,
    select,
    table,
)
from bnreg.analysis.verdicts import (
    Above,
    Agreement,
    Difference,
    above_beyond_noise,
    above_text,
    agreement,
    agreement_text,
    claim_text,
    difference,
    difference_text,
    learned,
)

__all__ = [
    "METRICS_FILE",
    "SUMMARY_FILE",
    "Above",
    "Agreement",
    "Difference",
    "above_beyond_noise",
    "above_text",
    "agreement",
    "agreement_text",
    "best",
    "cell",
    "claim_text",
    "combine",
    "confidence_interval",
    "curves",
    "describe",
    "difference",
    "difference_text",
    "finals",
    "first_step_reaching",
    "history",
    "learned",
    "lowest_mean",
    "markdown_table",
    "mean_std",
    "paired_differences",
    "require_columns",
    "scores",
    "seed_mean_std",
    "seed_values",
    "select",
    "table",
    "tied_with_best",
]
