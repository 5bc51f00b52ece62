"""One format for the four papers' reproduction tables (``results/<paper>/reproduction.tsv``).

Every table has one row per claim of the paper with the columns :data:`COLUMNS`:

* ``claim`` - what the paper states (a quantity, or a comparison whose direction can be checked);
* ``paper_value`` - the paper's number or wording, as printed (several cohorts: ``0.713 (GBMLGG) /
  0.717 (KIRC)``; a table may add one numeric column per cohort after the common columns);
* ``paper_section`` - where the paper says it (section, table or figure);
* ``this_run`` - this run's value, formatted as the paper's;
* ``data`` - what this run ran on: ``toy`` (the planted-signal cohort the pipeline generates) or
  the real cohort's name;
* ``direction_holds`` - ``True`` / ``False`` when the claim has a direction this run can check
  (e.g. "RNA-GAN's FID is below the GAN's"), ``n/a`` for a bare value (a toy RMSE is not
  comparable with the paper's);
* ``note`` - how this run's number was produced: stand-ins (another feature extractor, cell
  counter or cohort), the test it takes, sample sizes, what the direction means.

:class:`Claims` collects the rows; :func:`holds` turns a comparison into the ``direction_holds``
value (``n/a`` when a side is missing or not finite); :func:`check` validates a table before it is
written and :func:`tally` counts the claims that hold.  The report renders every table with
:func:`crossmodal.report.reproduction_html`.
"""
from __future__ import annotations

import math
from numbers import Real

import pandas as pd

COLUMNS = ["claim", "paper_value", "paper_section", "this_run", "data", "direction_holds", "note"]
NA = "n/a"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def holds(condition=None, *values) -> bool | str:
    """``direction_holds`` of a comparison: ``bool(condition)``, or ``"n/a"`` when ``condition``
    is None or any of ``values`` (the numbers the comparison used) is missing or not finite."""
    if condition is None or any(not _finite(v) for v in values):
        return NA
    return bool(condition)


def fmt(x, digits: int = 4) -> str:
    """A number as a table shows it (``digits`` significant digits; ``nan`` when missing)."""
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, Real) and not _finite(x)):
        return "nan"
    return f"{float(x):.{digits}g}"


def join_notes(*parts) -> str:
    """``"; "``-joined non-empty parts (a row's note from its pieces)."""
    return "; ".join(str(p) for p in parts if p is not None and str(p) != "")


class Claims:
    """Rows of one paper's reproduction table, all for the same ``data``; ``note`` (e.g. "toy
    cohort: numbers are not comparable to the paper's") is prefixed to every row's own note."""

    def __init__(self, data: str, note: str = ""):
        if not str(data).strip():
            raise ValueError("reproduction table: 'data' (toy or the real cohort's name) must be given")
        self.data, self.note, self.rows = str(data), str(note), []

    def add(self, claim: str, paper_value, paper_section: str, this_run, holds=NA, note: str = "", *,
            row_data: str | None = None, **extra) -> None:
        """One claim; ``holds``: True / False / ``"n/a"`` (use :func:`holds`); ``row_data``: this row's own
        data when it does not come from the table's (e.g. a count from the configuration's schema
        defaults) - the table's note is then not prefixed; ``extra``: table-specific columns (e.g.
        ``paper_gbmlgg``), placed after :data:`COLUMNS`."""
        if holds not in (True, False, NA):
            raise ValueError(f"reproduction claim {claim!r}: direction_holds must be True, False or 'n/a', got {holds!r}")
        if not str(paper_section).strip():
            raise ValueError(f"reproduction claim {claim!r}: no paper section")
        row = {"claim": str(claim), "paper_value": paper_value if isinstance(paper_value, str) else fmt(paper_value),
               "paper_section": str(paper_section), "this_run": this_run if isinstance(this_run, str) else fmt(this_run),
               "data": self.data if row_data is None else str(row_data), "direction_holds": holds,
               "note": join_notes(self.note, note) if row_data is None else str(note)}
        clash = set(extra) & set(COLUMNS)
        if clash:
            raise ValueError(f"reproduction claim {claim!r}: extra column(s) {', '.join(sorted(clash))} shadow common ones")
        row.update(extra)
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        extra = [c for r in self.rows for c in r if c not in COLUMNS]
        table = pd.DataFrame(self.rows, columns=COLUMNS + list(dict.fromkeys(extra)))
        check(table)
        return table


def check(table: pd.DataFrame, source: str = "reproduction table") -> pd.DataFrame:
    """Raise ValueError naming ``source`` unless ``table`` has :data:`COLUMNS` first, at least one
    row, and ``direction_holds`` in {True, False, n/a} (as written, or as read back from a TSV)."""
    if list(table.columns[: len(COLUMNS)]) != COLUMNS:
        raise ValueError(f"{source}: columns must start with {', '.join(COLUMNS)}; has {', '.join(map(str, table.columns))}")
    if table.empty:
        raise ValueError(f"{source}: no claims")
    bad = [v for v in table["direction_holds"] if str(v) not in ("True", "False", NA)]
    if bad:
        raise ValueError(f"{source}: direction_holds must be True, False or n/a; got {bad[:3]}")
    return table


def tally(table: pd.DataFrame) -> tuple[int, int]:
    """``(claims that hold, claims with a checkable direction)``."""
    s = table["direction_holds"].astype(str)
    return int((s == "True").sum()), int(s.isin(["True", "False"]).sum())


def summarise(tables: dict) -> pd.DataFrame:
    """One row per paper (``tables``: paper -> its reproduction table): data, claims, how many have a
    checkable direction, how many of those hold / fail, and the failing claims by name."""
    rows = []
    for paper, t in tables.items():
        check(t, f"reproduction table of {paper}")
        s = t["direction_holds"].astype(str)
        held, tested = tally(t)
        rows.append({"paper": paper, "data": ", ".join(dict.fromkeys(t["data"].astype(str))), "claims": len(t),
                     "directional": tested, "holds": held, "fails": tested - held,
                     "failing_claims": " | ".join(t.loc[s == "False", "claim"].astype(str))})
    return pd.DataFrame(rows)


def plot_summary(summary: pd.DataFrame, path) -> None:
    """Horizontal bars per paper: claims that hold, fail, and have no checkable direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossmodal.fileio import save_figure

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(summary) + 1.2))
    y = range(len(summary))
    na = summary["claims"] - summary["directional"]
    ax.barh(y, summary["holds"], color="#4daf4a", label="direction holds")
    ax.barh(y, summary["fails"], left=summary["holds"], color="#e41a1c", label="direction fails")
    ax.barh(y, na, left=summary["directional"], color="#bbbbbb", label="value only (n/a)")
    ax.set_yticks(list(y), [f"{p} ({d})" for p, d in zip(summary["paper"], summary["data"])])
    ax.invert_yaxis()
    ax.set_xlabel("claims in results/<paper>/reproduction.tsv")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Reproduction: paper claims whose direction this run reproduces", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
