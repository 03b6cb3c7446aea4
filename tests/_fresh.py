"""Running a check in a fresh interpreter, where nothing has imported bls yet."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_fresh(script: str, timeout: float) -> Any:
    """Run ``script`` with ``python -c``; return the JSON its last output line holds."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
