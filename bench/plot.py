"""Plot a bench/run.py result: speedup over the baseline of each case (mamba_ssm, two mamba_ssm
scans, or VMamba's unfused SS2D) and % of the copy-bandwidth roofline, per backend.

    python bench/plot.py bench/results/scan_ops_<device>_<commit>.json [--out file.png]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("result")
    p.add_argument("--out", default=None, help="default: the result's path with .png")
    args = p.parse_args()
    result = json.loads(pathlib.Path(args.result).read_text())
    cases = sorted({key.split("/")[0] for key in result["cases"]},
                   key=list(dict.fromkeys(k.split("/")[0] for k in result["cases"])).index)
    backends = sorted({key.split("/")[1] for key in result["cases"]})
    fig, (ax_speed, ax_roof) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    width = 0.8 / (2 * len(backends))
    for j, backend in enumerate(backends):
        for k, phase in enumerate(("fwd", "bwd")):
            offset = (2 * j + k - len(backends) + 0.5) * width
            speed, roof = [], []
            for case in cases:
                r = result["cases"].get(f"{case}/{backend}")
                base = r and r.get("baseline")
                speed.append(base[f"{phase}_ms"] / r[f"{phase}_ms"] if base else 0)
                roof.append(100 * r[f"{phase}_roofline"] if r else 0)
            xs = [i + offset for i in range(len(cases))]
            label = f"{backend} {'forward' if phase == 'fwd' else 'backward'}"
            ax_speed.bar(xs, speed, width, label=label)
            ax_roof.bar(xs, roof, width, label=label)
    ax_speed.axhline(1.0, color="black", linewidth=0.8)
    ax_speed.set_ylabel("speedup over baseline (x)")
    # each case's baseline as run.py named it (the SS2D ones at f0acd24 - ac27ca2 carried their
    # fwd+bwd ratio after a ";" in the name)
    whats = {re.sub(r";[^)]*\)", ")", r["baseline"]["what"])
             for r in result["cases"].values() if r.get("baseline")}
    ax_speed.set_title(f"ssops on {result['device']} (commit {result['commit'][:10]})\nbaselines: "
                       + " / ".join(sorted(whats)), fontsize=10)
    ax_roof.set_ylabel("% of copy-bandwidth roofline")
    ax_roof.set_xticks(range(len(cases)), cases, rotation=30, ha="right")
    for ax in (ax_speed, ax_roof):
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = args.out or str(pathlib.Path(args.result).with_suffix(".png"))
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
