"""Where the repository's own files are: the Feast declarations and the deploy recipes."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"
DEPLOY = REPO_ROOT / "deploy"
