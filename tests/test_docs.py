"""The docs site builds with `mkdocs build --strict` (broken links, missing pages and bad API references fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["index", "configuration", "run-directory", "sweeps", "recipes", "analysis", "reports", "performance", "python-api", "reference"]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    for page in PAGES[1:]:
        assert (site / page / "index.html").is_file(), f"docs page {page} was not built"
    reference = (site / "reference" / "index.html").read_text()
    for module in ("groklab.config", "groklab.train", "groklab.analysis", "groklab.stats"):
        assert f'id="{module}"' in reference, f"API reference lacks {module}"
