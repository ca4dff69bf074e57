"""Figures and numbers of built zoos for the docs: PSNR and test-accuracy distributions.

Usage:

    python packages/scalegmn-tasks/benchmarks/zoo_figures.py --inr ZOO --cnn ZOO --img docs/img

Writes `inr_psnr.png` and `cnn_accuracy.png` and prints the numbers as Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _history(zoo) -> str:
    h = zoo.manifest.history
    secs = sum(e["seconds"] for e in h)
    built = sum(e["networks_built"] for e in h)
    loads = ", ".join(str(e.get("load_average_1min")) for e in h)
    return f"{built} networks in {secs:.1f} s ({built / secs:.1f}/s; 1-min load average at the end: {loads})"


def inr_figures(path: Path, img: Path) -> str:
    import matplotlib.pyplot as plt

    from scalegmn.tasks.zoo import Zoo

    zoo = Zoo(path)
    psnr = zoo.columns["psnr"].astype(np.float64)
    q = np.percentile(psnr, [0, 5, 25, 50, 75, 95, 100])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(psnr, bins=50, color="#4c72b0")
    ax.set_xlabel("PSNR (dB)")
    ax.set_ylabel("INRs")
    ax.set_title(f"{len(zoo)} SIRENs on {zoo.manifest.source['name']}, {zoo.manifest.build['steps']} steps")
    fig.tight_layout()
    fig.savefig(img / "inr_psnr.png", dpi=110)
    plt.close(fig)
    return (
        f"- INR zoo `{path}`: {_history(zoo)}\n"
        f"- splits: {zoo.manifest.split_counts}\n"
        f"- PSNR (dB) min / 5% / 25% / median / 75% / 95% / max: "
        + " / ".join(f"{v:.1f}" for v in q) + f"; mean {psnr.mean():.1f}\n"
    )


def cnn_figures(path: Path, img: Path) -> str:
    import matplotlib.pyplot as plt

    from scalegmn.tasks.zoo import Zoo

    zoo = Zoo(path)
    acc = zoo.targets.astype(np.float64)
    acts = zoo.manifest.categories["activation"]
    ck = zoo.columns["checkpoint"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(0, 1, 41)
    for k, a in enumerate(acts):
        ax.hist(acc[zoo.columns["activation"] == k], bins=bins, alpha=0.6, label=a)
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("checkpoints")
    ax.legend()
    ax.set_title(f"{len(zoo)} CNN checkpoints on {zoo.manifest.source['name']}")
    fig.tight_layout()
    fig.savefig(img / "cnn_accuracy.png", dpi=110)
    plt.close(fig)
    lines = [f"- CNN zoo `{path}`: {_history(zoo)}", f"- splits: {zoo.manifest.split_counts}"]
    q = np.percentile(acc, [0, 10, 50, 90, 100])
    lines.append("- test accuracy min / 10% / median / 90% / max: " + " / ".join(f"{v:.3f}" for v in q)
                 + f"; std {acc.std():.3f}")
    for k, a in enumerate(acts):
        sel = zoo.columns["activation"] == k
        lines.append(f"- {a}: {int(sel.sum())} checkpoints, median accuracy {np.median(acc[sel]):.3f}, "
                     f"max {acc[sel].max():.3f}")
    for c in np.unique(ck):
        sel = ck == c
        frac = zoo.manifest.build["checkpoints"][int(c)]
        lines.append(f"- checkpoint at {frac:g} of training: median accuracy {np.median(acc[sel]):.3f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inr", type=Path)
    p.add_argument("--cnn", type=Path)
    p.add_argument("--img", type=Path, default=Path("docs/img"))
    a = p.parse_args()
    a.img.mkdir(parents=True, exist_ok=True)
    if a.inr:
        print(inr_figures(a.inr, a.img))
    if a.cnn:
        print(cnn_figures(a.cnn, a.img))


if __name__ == "__main__":
    main()
