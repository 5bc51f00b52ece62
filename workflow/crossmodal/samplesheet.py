"""The sample sheet: one row per sample (patient, sample, cohort, dataset, slide, expression...).

Validated row by row against ``workflow/schemas/samples.schema.yaml``.  For a user's sheet
every referenced file must exist; errors name the sheet, the row's sample id and the column.
"""
from __future__ import annotations

import functools
import io
import math
from pathlib import Path

import pandas as pd

from crossmodal.config import SCHEMA_DIR, ConfigError

COLUMNS = ["patient", "sample", "cohort", "dataset", "slide", "expression", "expression_format", "mpp"]


class SampleSheetError(ConfigError):
    pass


def read_sheet(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise SampleSheetError(f"sample sheet {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError as e:
        raise SampleSheetError(f"sample sheet {path}: not UTF-8 text ({e})") from None
    df = _parse(text, path)
    return normalise(df, str(path))


def _parse(text: str, path) -> pd.DataFrame:
    """The sheet's cells as strings, every line checked against the header's field count
    (a sheet with a header and no rows is read, with a warning: download-first configs start so).

    Only a line that starts with '#' is a comment (no id may start with one: see the schema's
    patterns); pandas' comment="#" also cut a line at a '#' inside a field, so a slide path like
    run#2/a.svs silently lost the rest of its row.  pandas also took a short row's missing
    cells as empty and, given a trailing tab on a row, used the first column as the index and
    shifted every value one column.  So: a short row, or a long one with something in the
    extra cells, is refused naming its line; empty cells after the last column (spreadsheet
    exports pad rows with tabs) are dropped."""
    import csv

    header, rows = None, []
    for no, fields in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter="\t"), start=1):
        if not any(f.strip() for f in fields) or fields[0].startswith("#"):  # blank (or only tabs), comment
            continue
        if header is None:
            header = [h.strip() for h in fields]
            while header and header[-1] == "":
                header.pop()
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup or "" in header:
                raise SampleSheetError(f"sample sheet {path}: line {no}: the header "
                                       + (f"repeats column(s) {', '.join(dup)}" if dup else "has an empty column name"))
            continue
        if len(fields) > len(header) and not any(f.strip() for f in fields[len(header):]):
            fields = fields[: len(header)]
        if len(fields) != len(header):
            extra = "" if len(fields) < len(header) else f"; extra cell(s) {fields[len(header):]}"
            raise SampleSheetError(f"sample sheet {path}: line {no} has {len(fields)} tab-separated fields, the "
                                   f"header {len(header)} ({', '.join(header)}){extra}")
        rows.append(fields)
    if header is None:
        raise SampleSheetError(f"sample sheet {path}: empty (no header line; expected the columns {', '.join(COLUMNS)})")
    if not rows:  # a download-first config starts so (config/coherent.yaml): plan, but say so
        import logging

        logging.getLogger(__name__).warning("sample sheet %s: no samples (a header line and nothing else)", path)
    return pd.DataFrame(rows, columns=header, dtype=str)


@functools.lru_cache(maxsize=1)
def _row_validator():
    """The sample-row schema, compiled once (it has no $ref, so no registry of the other
    schemas is needed; crossmodal.config.validate reloads every schema file per call, which
    made the DAG build validate 80 rows in ~20 s)."""
    import yaml

    from crossmodal.config import _Validator

    return _Validator(yaml.safe_load((SCHEMA_DIR / "samples.schema.yaml").read_text()))


def _validate_row(rec: dict, what: str) -> None:
    """Validate one row in place (defaults filled), as crossmodal.config.validate does."""
    from crossmodal.config import _message

    errors = sorted(_row_validator().iter_errors(rec), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        raise SampleSheetError(_message(errors[0], what))


def normalise(df: pd.DataFrame, what: str = "sample sheet") -> pd.DataFrame:
    """Validate rows, fill defaults, check uniqueness; returns a copy indexed by sample."""
    rows = []
    for i, rec in enumerate(df.to_dict(orient="records")):
        rec = {k: v for k, v in rec.items() if not (k == "mpp" and v in ("", None))}
        if "mpp" in rec and rec["mpp"] not in (None, ""):
            try:
                rec["mpp"] = float(rec["mpp"])
            except (TypeError, ValueError):
                raise SampleSheetError(f"{what}: row {i + 1} (sample {rec.get('sample')}): mpp {rec['mpp']!r} is not a number")
            if not math.isfinite(rec["mpp"]):  # NaN passes the schema's exclusiveMinimum; inf has no upper bound
                raise SampleSheetError(f"{what}: row {i + 1} (sample {rec.get('sample')}): mpp {rec['mpp']} is not "
                                       "a finite number (leave the cell empty to use the slide's own metadata)")
        _validate_row(rec, f"{what}: row {i + 1} (sample {rec.get('sample', '?')})")
        if rec["expression"] and not rec["expression_format"]:
            raise SampleSheetError(f"{what}: sample {rec['sample']}: expression given but expression_format is empty")
        rows.append(rec)
    out = pd.DataFrame(rows, columns=COLUMNS)
    dup = out["sample"][out["sample"].duplicated()].unique()
    if len(dup):
        raise SampleSheetError(f"{what}: duplicated sample id(s): {', '.join(dup)}")
    return out.set_index("sample", drop=False)


def check_files(df: pd.DataFrame, what: str = "sample sheet") -> None:
    """Every slide / expression path named in the sheet must be an existing file (a FASTQ
    sample may list several, separated by ';')."""
    missing = []
    for rec in df.to_dict(orient="records"):
        for col in ("slide", "expression"):
            many = col == "expression" and rec["expression_format"] == "fastq"
            for p in filter(None, str(rec[col]).split(";") if many else [str(rec[col])]):
                if not Path(p).exists():
                    missing.append(f"sample {rec['sample']}: {col} file {p} does not exist")
                elif not Path(p).is_file():
                    missing.append(f"sample {rec['sample']}: {col} {p} is not a file")
    if missing:
        raise SampleSheetError(f"{what}: " + "; ".join(missing[:20]) + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""))


def load(config: dict) -> pd.DataFrame:
    """The sample table the workflow runs on: the toy cohort's plan or the user's sheet."""
    if config["cohort"]["source"] == "toy":
        from crossmodal.toy import plan

        return normalise(plan(config), "toy cohort plan")
    df = read_sheet(config["cohort"]["samples"])
    check_files(df, config["cohort"]["samples"])
    return df
