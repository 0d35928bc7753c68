"""Test encoders for the Ray paths (tests/test_scale_ray.py), driven by files so that Ray workers obey them.

``$ANYBIND_TEST_SCALE_DIR`` (set before Ray starts, inherited by its workers) names a folder:
``calls.log`` gets one line per batch (its size); ``control.json``, when present, says
``{"fail_after": N, "mode": "raise" | "exit"}``: once N batches were encoded (counted over every
process), the next batch raises (or kills its worker process) and ``failed.marker`` is written, so
only the first run fails.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def _vec(s: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def flaky_text(items):
    """Text -> a deterministic pseudo-random 8-d vector; fails once on demand (see the module doc)."""
    d = os.environ.get("ANYBIND_TEST_SCALE_DIR")
    if d:
        d = Path(d)
        ctl = d / "control.json"
        if ctl.exists() and not (d / "failed.marker").exists():
            c = json.loads(ctl.read_text())
            done = len((d / "calls.log").read_text().splitlines()) if (d / "calls.log").exists() else 0
            if done >= int(c["fail_after"]):
                (d / "failed.marker").write_text("x")
                if c.get("mode") == "exit":
                    os._exit(1)  # a worker killed mid-encode (the shard it was filling is lost)
                raise RuntimeError(f"simulated encoder failure after {done} batches")
        with open(d / "calls.log", "a") as f:
            f.write(f"{len(items)}\n")
    return np.stack([_vec(s, 8) for s in items])


flaky_text.dim = 8
flaky_text.input_kind = "text"
flaky_text.batch_size = 4
