"""Where things are: the repository root, resources, and the results layout."""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WORKFLOW_DIR = PACKAGE_DIR.parent
REPO_ROOT = WORKFLOW_DIR.parent
RESOURCES = REPO_ROOT / "resources"
