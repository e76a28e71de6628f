"""The app synthesized for the emulator: `cdk synth` through the pinned CLI, offline, each downstream at its simulator."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthesize(base_urls: Mapping[str, str], out: Path, *, stage: str = "dev") -> Path:
    """Synthesize every stack of `stage` into `out`, with cdk-nag on, pointing each downstream at `base_urls`."""
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true",
           "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    command = [str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--output", str(out),
               "-c", f"stage={stage}", "-c", "nag=true", "-c", f"downstream_base_urls={json.dumps(dict(base_urls))}"]
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return out
