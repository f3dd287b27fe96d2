"""Where catdog keeps what it makes outside run folders: `$CATDOG_HOME`, default `~/.cache/catdog`.

Downloads, prepared data (extracted zips, manifests) and the shipped model's exports live
under it; tests and several local workers each set their own.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The folder catdog writes downloads, prepared data and the shipped model's exports to."""
    return Path(os.environ.get("CATDOG_HOME", Path.home() / ".cache" / "catdog")).expanduser()
