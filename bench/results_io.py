"""What every benchmark result records about its run, and where it is written."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import torch


def run_info() -> dict:
    """Device, versions and commit (SSOPS_COMMIT where the checkout has no .git, as on the
    GPU machine)."""
    import triton
    commit = os.environ.get("SSOPS_COMMIT") or subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True,
        cwd=pathlib.Path(__file__).parent).stdout.strip()
    return dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                triton=triton.__version__, cuda=torch.version.cuda, commit=commit)


def save(result: dict, prefix: str, out: str) -> pathlib.Path:
    """Writes result to <out>/<prefix>_<device>_<commit>.json and says where."""
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}_{result['device'].replace(' ', '_')}_{result['commit'][:10]}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return path
