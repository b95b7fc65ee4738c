"""Learning curves of the cpu-scale search: full-split kNN against images seen, beside the baselines.

    python docs/experiments/cpu_scale_curves.py --baselines docs/results/cpu_scale/baselines.json \
        --out docs/results/cpu_scale LABEL=RUN_DIR ...

Each RUN_DIR is a `gsg pretrain` run whose online monitor used the whole train split as bank and the whole test
split (`--set run.knn_train_subset=none --set run.knn_test_subset=none`), so its knn_k200 / knn_k1 are the
full protocol. Writes curves.png and curves.md (a table per run: epoch, images seen, kNN, seconds per epoch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_epochs(run: Path) -> list[dict]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch":
            rows.append(rec)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--baselines", type=Path, required=True, help="the JSON `gsg baselines --out` wrote")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images-per-epoch", type=int, default=60000)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = json.loads(args.baselines.read_text())["baselines"]
    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    md = ["# Learning curves (written by docs/experiments/cpu_scale_curves.py)", ""]
    for spec in args.runs:
        label, run = spec.split("=", 1)
        rows = [r for r in read_epochs(Path(run)) if r.get("knn_k200") is not None]
        cmd = (Path(run) / "command.txt").read_text().strip() if (Path(run) / "command.txt").is_file() else ""
        md += [f"## {label}", "", f"`{cmd}`", "", "| epoch | images seen | kNN k=200 | kNN k=1 | s/epoch |",
               "|---|---|---|---|---|"]
        every = read_epochs(Path(run))
        for r in rows:
            secs = next((e.get("epoch_time_s") for e in every if e["epoch"] == r["epoch"]), None)
            md.append(f"| {r['epoch']} | {r['epoch'] * args.images_per_epoch:,} | {r['knn_k200']:.2f} | "
                      f"{r['knn_k1']:.2f} | {secs:.0f} |")
        for name in ("raw_pixels", "random_init"):  # the same protocol's baselines, beside every curve
            b = base[name]
            spread = f" ± {b['knn_k200_std']:.2f}" if b.get("knn_k200_std") else ""
            md.append(f"| *baseline: {b['label']}* | | {b['knn_k200']:.2f}{spread} | {b['knn_k1']:.2f} | |")
        md.append("")
        x = [r["epoch"] * args.images_per_epoch / 1e6 for r in rows]
        for ax, key in zip(axes, ("knn_k200", "knn_k1"), strict=True):
            ax.plot(x, [r[key] for r in rows], marker="o", label=label)
    for ax, key, title in zip(axes, ("knn_k200", "knn_k1"), ("kNN k=200 (T=0.1)", "kNN k=1"), strict=True):
        for name, style in (("raw_pixels", "--"), ("random_init", ":")):
            ax.axhline(base[name][key], color="gray", linestyle=style, label=base[name]["label"])
        if key == "knn_k200":
            ax.axhline(base["random_init"][key] + 8, color="red", linestyle=":", linewidth=0.8,
                       label="random init + 8 (the target)")
        ax.set_xlabel("images seen (millions)")
        ax.set_ylabel("accuracy (%), whole train bank / whole test set")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    (args.out / "curves.md").write_text("\n".join(md) + "\n")
    print(args.out / "curves.png", args.out / "curves.md")


if __name__ == "__main__":
    main()
