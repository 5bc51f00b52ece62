"""Render config/README.md from the config schema, so the documentation cannot drift.

``python -m crossmodal.configdoc`` rewrites config/README.md; a test fails when the
committed file differs from what the schema renders.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from crossmodal.config import SCHEMA_DIR
from crossmodal.paths import REPO_ROOT

HEADER = """# Configuration

`config/config.yaml` is the default run: the planted-signal toy cohort on CPU, in minutes.
The per-paper files (`rna_gan.yaml`, `rna_cdm.yaml`, ...) are the real-data runs with the
papers' hyperparameters; use one with `snakemake --configfile config/<file>.yaml`.
Override any key on the command line: `snakemake --config seed=1`.

Every key below is validated at start by `workflow/schemas/config.schema.yaml` (and one
schema file per section in `workflow/schemas/config/`): an unknown or mistyped key, or a NaN
or infinite number (`.nan`, `.inf`) anywhere, stops the run with a message naming the key;
missing keys take the default shown. Defaults are the
papers' values; the description cites the paper and section.

This file is generated from the schema by `python -m crossmodal.configdoc` — edit the schema's
`description` fields, not this file.

## The sample sheet (`config/samples.tsv`)

Used when `cohort.source` is `sheet`; one tab-separated row per sample, validated by
`workflow/schemas/samples.schema.yaml`. Every slide and expression file named must exist.
A line starting with `#` is a comment; a `#` inside a field (`run#2/a.svs`) is part of it.

"""


def _load(ref: str, base: Path):
    return yaml.safe_load((base / ref).read_text())


def _fmt_default(v) -> str:
    if v is None:
        return "`null`"
    s = json.dumps(v, separators=(", ", ": "))
    if len(s) > 60:
        s = s[:57] + "..."
    return f"`{s}`"


def _type(s: dict) -> str:
    t = s.get("type", "")
    if isinstance(t, list):
        t = " or ".join(t)
    if "enum" in s:
        t = "one of " + ", ".join(f"`{e}`" if e != "" else '`""`' for e in s["enum"])
    return t


def _rows(schema: dict, prefix: str, base: Path, root: dict, out: list):
    for key, sub in (schema.get("properties") or {}).items():
        sub_base = base
        if "$ref" in sub:
            ref = sub["$ref"]
            local = {k: v for k, v in sub.items() if k != "$ref"}  # siblings of $ref win
            sub = _load(ref, base) if not ref.startswith("#") else _resolve_local(ref, root)
            sub_root = sub if not ref.startswith("#") else root
            if not ref.startswith("#"):  # refs inside that file are relative to its folder
                sub_base = (base / ref).parent
            sub = {**sub, **local}
        else:
            sub_root = root
        name = f"{prefix}{key}"
        desc = " ".join(str(sub.get("description", "")).split())
        default = _fmt_default(sub["default"]) if "default" in sub and sub.get("type") != "object" else ""
        if sub.get("type") == "object" and sub.get("properties"):
            out.append((name, "object", "", desc))
            _rows(sub, name + ".", sub_base, sub_root, out)
        else:
            if sub.get("type") == "object" and "default" in sub:
                default = _fmt_default(sub["default"])
            out.append((name, _type(sub), default, desc))
        ap = sub.get("additionalProperties")
        if isinstance(ap, dict):
            ap_root = sub_root
            if "$ref" in ap:
                ref = ap["$ref"]
                if not ref.startswith("#"):  # "other.schema.yaml#/$defs/x": another schema file's definition
                    path, _, frag = ref.partition("#")
                    ap_root = _load(path, sub_base)
                    ref = "#" + frag
                ap = _resolve_local(ref, ap_root)
            if ap.get("properties"):
                _rows(ap, name + ".<name>.", sub_base, ap_root, out)


def _resolve_local(ref: str, root: dict) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def render() -> str:
    lines = [HEADER, "| column | type | default | meaning |", "|---|---|---|---|"]
    samples = yaml.safe_load((SCHEMA_DIR / "samples.schema.yaml").read_text())
    req = set(samples.get("required", []))
    for key, sub in samples["properties"].items():
        d = "required" if key in req else _fmt_default(sub.get("default"))
        lines.append(f"| `{key}` | {_type(sub)} | {d} | {' '.join(str(sub.get('description', '')).split())} |")
    top = yaml.safe_load((SCHEMA_DIR / "config.schema.yaml").read_text())
    rows: list = []
    _rows(top, "", SCHEMA_DIR, top, rows)
    lines += ["", "## Keys", ""]
    section = None
    for name, typ, default, desc in rows:
        head = name.split(".")[0]
        if "." not in name and typ == "object":
            section = head
            lines += ["", f"### `{head}`", "", desc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
            continue
        if "." not in name and section is not None:
            section = None
            lines += ["", "### top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        if section is None and not lines[-1].startswith("|"):
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines.append(f"| `{name}` | {typ} | {default} | {desc} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    target = REPO_ROOT / "config" / "README.md"
    if argv and argv[0] == "--check":
        if not target.exists() or target.read_text() != text:
            print("config/README.md is out of date: run `python -m crossmodal.configdoc`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
