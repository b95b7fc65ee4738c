"""The report's words about the setting: the dataset's name, the training settings in one line, and the notes
that depend on the resolved kNN, linear-probe and t-SNE settings."""

from __future__ import annotations

from gsg.config import Config
from gsg.reproduce.experiments import Experiment, LinearDef, TsneDef
from gsg.reproduce.plan import KNN_K

PRETTY_DATASETS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                   "stl10": "STL-10", "synthetic": "synthetic", "imagefolder": "image folder"}


def dataset_name(cfg: Config, exp: Experiment) -> str:
    """The dataset the runs train on, as the paper writes it (base_overrides may change it)."""
    if cfg.data.dataset == "imagefolder" and exp.preset == "imagenet":
        return "ImageNet"
    return PRETTY_DATASETS.get(cfg.data.dataset, cfg.data.dataset)


def describe_setting(cfg: Config) -> str:
    """The first run's training settings in one line (the runs differ only as the table shows)."""
    d, m, o = cfg.data, cfg.model, cfg.optim
    lr = f"lr {o.lr:g}" if o.lr is not None else f"lr {o.base_lr:g} × batch/256"
    size = f", {d.image_size} px" if d.image_size else ""
    subset = f"{d.subset}-image training subset" if d.subset else "full training set"
    return (f"{subset}{size}, {m.backbone} width {m.width:g}, projector {m.proj_layers}×{m.proj_dim}, "
            f"batch {o.batch_size}, {o.epochs} epochs, {lr} ({o.schedule}), wd {o.weight_decay:g}")


def setting_notes(exp: Experiment, cfg: Config, linear: LinearDef | None, tsne: TsneDef | None,
                  dataset: str) -> list[str]:
    """The experiment's notes plus the ones that depend on the resolved kNN and linear-probe settings."""
    notes = [n.replace("{dataset}", dataset) for n in exp.notes]
    r = cfg.run
    if "knn" in exp.evals:
        notes.append(f"kNN in the tables: `gsg knn` on the final checkpoint with the whole train split as bank and "
                     f"the whole test split (cosine similarity on L2-normalised backbone features; weighted vote "
                     f"k={KNN_K} T={exp.knn_temperature:g}, and k=1; the paper reports k=1 on CIFAR-10, k=200 on "
                     "ImageNet).")
    if r.knn_every:
        notes.append(f"kNN curves (and the runs table's monitor column): the online monitor, bank "
                     f"{r.knn_train_subset or 'all'} clean training images, test {r.knn_test_subset or 'all'} "
                     f"images, every {r.knn_every} epoch(s); smaller than the tables' protocol, so lower.")
    if "linear" in exp.evals and linear is not None:
        size = cfg.data.image_size or 32
        proto = ("SGD, lr 30, batch 256, cosine (the paper's CIFAR protocol)" if size <= 64 else
                 "LARS, batch 4096, cosine (the ImageNet protocol)")
        how = ("on precomputed clean features, without augmentation (the paper trains on augmented views; "
               "a fast stand-in for CPUs, usually a point or two lower)" if linear.mode == "features" else
               "on augmented views (the paper's protocol)")
        notes.append(f"Linear probe (`mode=\"{linear.mode}\"`): a linear classifier on the frozen backbone, "
                     f"{linear.epochs} epochs, {proto}, {how}, on {linear.train_subset or 'all'} training images; "
                     "top-1 on the full test set.")
    if "tsne" in exp.evals and tsne is not None:
        notes.append(f"t-SNE: scikit-learn Barnes-Hut (perplexity 30, PCA initialisation, seed 0) of the backbone "
                     f"features of at most {tsne.max_points} test images; each panel's title gives the kNN accuracy "
                     f"(k=200 / k=1) of those features with {tsne.train_subset or 'all'} training images as bank.")
    return notes
