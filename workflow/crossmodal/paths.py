"""Where things are: the repository root, resources, and the results layout."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WORKFLOW_DIR = PACKAGE_DIR.parent
REPO_ROOT = WORKFLOW_DIR.parent
RESOURCES = REPO_ROOT / "resources"

# results written by one stage and read by several (one definition each)
SSL_ENCODER = "results/metrics/ssl/encoder.pt"  # the cohort SimCLR encoder (rule train_ssl_encoder)
TOY_FRACTIONS = "results/toy/truth/fractions.tsv"  # the toy cohort's planted cell fractions


def ssl_encoder(used: bool) -> list[str]:
    """``[SSL_ENCODER]`` as a rule input where the cohort-ssl encoder is ``used``, else none."""
    return [SSL_ENCODER] if used else []


def extractor_weights(extractor: str, config: dict) -> list[str]:
    """The weights file of feature extractor ``extractor``: the cohort SimCLR encoder written by
    the metrics stage, or the user's local Inception-V3 file (config metrics.inception_weights)."""
    if extractor == "cohort-ssl":
        return [SSL_ENCODER]
    w = config.get("metrics", {}).get("inception_weights")
    return [w] if w else []


def toy_truth(config: dict) -> list[str]:
    """The toy answer key (planted fractions) as a rule input on the toy cohort, else none."""
    return [TOY_FRACTIONS] if config["cohort"]["source"] == "toy" else []
