"""Config loading and validation.

The schema lives in ``workflow/schemas/config.schema.yaml``; each top-level section has its
own file under ``workflow/schemas/config/`` referenced with ``$ref``.  Validation fills in
defaults (so every key the code reads exists) and rejects unknown or mistyped keys, and NaN or
infinite numbers anywhere, with a message that names the key path, e.g.
``config: tiling.tile_sise: unknown key``.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


class ConfigError(ValueError):
    """A config or sample sheet that does not validate; the message names the key."""


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "$ref" in sub and "default" not in sub:
                    resolved = validator._resolver.lookup(sub["$ref"]).contents
                    sub = resolved
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(path: Path):
    """Parse a schema file with libyaml when available (the pure-Python loader is ~10x slower)."""
    return yaml.load(path.read_text(), Loader=_YAML_LOADER)


def _registry(schema_dir: Path) -> Registry:
    resources = []
    for path in sorted(schema_dir.rglob("*.yaml")):
        contents = _load_yaml(path)
        rel = path.relative_to(schema_dir).as_posix()
        resources.append((rel, Resource.from_contents(contents, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


def _path(err) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def _message(err, what: str) -> str:
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        loc = _path(err)
        keys = ", ".join((f"{loc}.{k}" if loc != "<top level>" else k) for k in extra)
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"{what}: unknown key {keys} (allowed here: {allowed})"
    return f"{what}: {_path(err)}: {err.message}"


def validate(instance: dict, schema_file: str | Path, what: str = "config") -> dict:
    """Validate ``instance`` in place against ``schema_file``, filling defaults.

    ``schema_file`` may end in a JSON pointer to one definition of the file, e.g.
    ``config/tiling.schema.yaml#/$defs/preset`` (relative paths are under :data:`SCHEMA_DIR`).
    Raises :class:`ConfigError` naming the first offending key.  Returns the instance.
    """
    schema_file, _, pointer = str(schema_file).partition("#")
    schema_file = Path(schema_file)
    if not schema_file.is_absolute():
        schema_file = SCHEMA_DIR / schema_file
    schema = _load_yaml(schema_file)
    registry = _registry(schema_file.parent)
    if pointer:
        # the registry holds the files of schema_file's folder by their names
        schema = {"$ref": f"{schema_file.name}#{pointer}"}
    v = _Validator(schema, registry=registry)
    # two passes: the first fills defaults (which may create sub-objects), the second reports
    errors = sorted(v.iter_errors(instance), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        raise ConfigError(_message(errors[0], what))
    _check_finite(instance, what)
    _check_diffusion_schedules(instance, what)
    _check_pathgen_conformal(instance, what)
    _check_pathgen_cross_fit(instance, what)
    _check_rna_cdm_cascade(instance, what)
    return instance


def _check_finite(node, what: str, path: tuple = ()) -> None:
    """No NaN or infinite number anywhere (YAML ``.nan`` / ``.inf``).  JSON Schema bounds cannot
    catch them: every comparison with NaN is false, so NaN passes ``minimum`` and ``maximum``,
    and inf passes any bound without an upper limit."""
    if isinstance(node, dict):
        for k, v in node.items():
            _check_finite(v, what, path + (k,))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_finite(v, what, path + (i,))
    elif isinstance(node, float) and not math.isfinite(node):
        loc = ".".join(map(str, path)) or "<top level>"
        raise ConfigError(f"{what}: {loc}: {node} is not a finite number")


def _check_pathgen_conformal(instance: dict, what: str) -> None:
    """Equation (12)'s N must be MCAT_GR's number of time bins: the risk -sum_k S_k of the model
    lies in [-N, 0] and is mapped onto [risk_min, risk_max] with that N."""
    pg = instance.get("pathgen") if isinstance(instance, dict) else None
    if not isinstance(pg, dict):
        return
    mc, cf = pg.get("mcat") or {}, pg.get("conformal") or {}
    if "n_bins" in mc and "n_bins" in cf and mc["n_bins"] != cf["n_bins"]:
        raise ConfigError(f"{what}: pathgen.conformal.n_bins ({cf['n_bins']}) must equal pathgen.mcat.n_bins "
                          f"({mc['n_bins']}): equation (12) scales the risk of the model's time bins")
    if "risk_min" in cf and "risk_max" in cf and not cf["risk_min"] < cf["risk_max"]:
        raise ConfigError(f"{what}: pathgen.conformal.risk_min ({cf['risk_min']}) must be below risk_max "
                          f"({cf['risk_max']})")


def _check_pathgen_cross_fit(instance: dict, what: str) -> None:
    """pathgen.cross_fit.folds: 0 (off) or at least 2 - one fold would hold out every training patient."""
    pg = instance.get("pathgen") if isinstance(instance, dict) else None
    if isinstance(pg, dict) and (pg.get("cross_fit") or {}).get("folds") == 1:
        raise ConfigError(f"{what}: pathgen.cross_fit.folds is 1: one fold holds out every training patient "
                          "(0 = off, or 2 and more folds)")


def _check_rna_cdm_cascade(instance: dict, what: str) -> None:
    """RNA-CDM's cascade settings that only make sense together, checked before any training:
    the low-resolution blur kernel is centred (odd size), the Karras sampler's churn window is
    non-empty (S_tmin < S_tmax) and the super-resolution stage enlarges the base tiles."""
    rc = instance.get("rna_cdm") if isinstance(instance, dict) else None
    if not isinstance(rc, dict):
        return
    k = rc.get("lowres_blur_kernel")
    if isinstance(k, int) and k % 2 == 0:
        raise ConfigError(f"{what}: rna_cdm.lowres_blur_kernel ({k}) must be odd: the Gaussian blur of the "
                          "upsampled low-resolution image needs a centred kernel")
    smp = rc.get("sampler") or {}
    if "S_tmin" in smp and "S_tmax" in smp and not smp["S_tmin"] < smp["S_tmax"]:
        raise ConfigError(f"{what}: rna_cdm.sampler.S_tmin ({smp['S_tmin']}) must be below rna_cdm.sampler.S_tmax "
                          f"({smp['S_tmax']}): churn is added only for S_tmin <= sigma <= S_tmax")
    base, sr = (rc.get("base_unet") or {}).get("image_size"), (rc.get("sr_unet") or {}).get("image_size")
    if base is not None and sr is not None and not sr > base:
        raise ConfigError(f"{what}: rna_cdm.sr_unet.image_size ({sr}) must exceed rna_cdm.base_unet.image_size "
                          f"({base}): the super-resolution stage enlarges the base tiles")


# DDPM settings of the pipeline config: (section path, keys).  Sampling starts from pure noise
# N(0, I), so the schedule must destroy the data by step T: sqrt(abar_T) = sqrt(prod(1 - beta_t))
# is 0.0064 for Ho et al.'s 1e-4..0.02 over T = 1000, but 0.36 if T is cut to 200 without
# rescaling the betas (the sampler then starts far from what the network was trained on).
DIFFUSION_SCHEDULES = (("pathgen", "model"), ("coherent", "diffusion"), ("rna_cdm", "ddpm"), ("ddpm",))
MAX_TERMINAL_SIGNAL = 0.05


def terminal_signal(timesteps: int, beta_start: float, beta_end: float) -> float:
    """``sqrt(abar_T)`` of a linear beta schedule: how much of ``x_0`` is left in ``x_T``."""
    t = int(timesteps)
    betas = [beta_start + (beta_end - beta_start) * i / max(t - 1, 1) for i in range(t)]
    return math.exp(0.5 * sum(math.log1p(-b) for b in betas))


def _check_diffusion_schedules(instance: dict, what: str) -> None:
    for path in DIFFUSION_SCHEDULES:
        node = instance
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not {"timesteps", "beta_start", "beta_end"} <= set(node):
            continue
        s = terminal_signal(node["timesteps"], node["beta_start"], node["beta_end"])
        if s > MAX_TERMINAL_SIGNAL:
            loc = ".".join(path)
            raise ConfigError(
                f"{what}: {loc}: the linear schedule beta {node['beta_start']:g}..{node['beta_end']:g} over "
                f"timesteps {node['timesteps']} leaves sqrt(abar_T) = {s:.3f} of the data in x_T (at most "
                f"{MAX_TERMINAL_SIGNAL} allowed: sampling starts from pure noise); with fewer steps than 1000, "
                f"scale beta_start and beta_end by 1000 / timesteps")


def load_config(config: dict | None = None, path: str | Path | None = None) -> dict:
    """Load (optionally from ``path``) and validate a pipeline config."""
    cfg: dict[str, Any] = {}
    if path is not None:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    if config:
        cfg = _merge(cfg, config)
    return validate(cfg, SCHEMA_DIR / "config.schema.yaml", "config")


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
