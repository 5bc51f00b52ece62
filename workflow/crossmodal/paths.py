"""Where things are: the repository root, resources, and the results layout."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WORKFLOW_DIR = PACKAGE_DIR.parent
REPO_ROOT = WORKFLOW_DIR.parent
RESOURCES = REPO_ROOT / "resources"

# results written by one stage and read by several (one definition each)
TOY_FRACTIONS = "results/toy/truth/fractions.tsv"  # the toy cohort's planted cell fractions


def ssl_encoder_path(config: dict, scheme: str | None = None) -> str:
    """The cohort SimCLR encoder (rule train_ssl_encoder) trained on the tiles of the training
    patients of split scheme ``scheme`` - by default ``metrics.splits``, the encoder of the FID /
    KID / IS features.  A chain with its own split (PathGen, Coherent) asks for its scheme's
    encoder, so that no patient of its test split trained the features it is evaluated on."""
    return f"results/metrics/ssl/{scheme or config['metrics']['splits']}/encoder.pt"


def ssl_encoder(config: dict, used: bool, scheme: str | None = None) -> list[str]:
    """``[ssl_encoder_path(config, scheme)]`` as a rule input where the encoder is ``used``, else none."""
    return [ssl_encoder_path(config, scheme)] if used else []


def extractor_weights(extractor: str, config: dict) -> list[str]:
    """The weights file of feature extractor ``extractor``: the cohort SimCLR encoder of
    ``metrics.splits`` written by the metrics stage, or the user's local Inception-V3 file (config
    metrics.inception_weights)."""
    if extractor == "cohort-ssl":
        return [ssl_encoder_path(config)]
    w = config.get("metrics", {}).get("inception_weights")
    return [w] if w else []


def toy_truth(config: dict) -> list[str]:
    """The toy answer key (planted fractions) as a rule input on the toy cohort, else none."""
    return [TOY_FRACTIONS] if config["cohort"]["source"] == "toy" else []
