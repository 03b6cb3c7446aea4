"""Running a two-process training script (``_hf_ddp.py``, ``_lightning_ddp.py``) from a test."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

TESTS = Path(__file__).parent


def run_two_ranks(command: list[str], out: Path) -> list[dict[str, Any]]:
    """Run ``command out``, whose ranks 0 and 1 save ``out/rank{r}.pt``; return what they saved."""
    result = subprocess.run(
        [*command, str(out)], cwd=TESTS, capture_output=True, text=True, timeout=240
    )
    # Which ranks saved their results tells a crash in training from one at exit.
    saved = sorted(p.name for p in out.glob("rank*.pt"))
    assert result.returncode == 0, f"results saved: {saved}\n{result.stderr[-3000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
