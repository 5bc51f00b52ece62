"""Cluster execution helpers: PBS Pro (Polaris) submit/status/cancel, and a tiny self-check
workflow (``check``) used by the SLURM CI test and by ``profiles/*/README.md`` smoke runs."""
