"""Where limelight keeps what it derives on this machine: `cache_dir`.

`$LIMELIGHT_CACHE_DIR`, else `$XDG_CACHE_HOME/limelight`, else `~/.cache/limelight`.  It
holds joined model files (`loader/packaged.py`) and built CPU kernels (`kernels/`); all of
it can be deleted and is made again when needed.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    if custom := os.environ.get("LIMELIGHT_CACHE_DIR"):
        return Path(custom).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "limelight"
