"""GSG in your own training loop: any encoder, any data, one call to ``policy_loss``.

Run: ``python examples/own_training_loop.py --steps 200``. It trains a tiny convolutional encoder with SimSiam +
Guided Stop-Gradient on gsg's synthetic images. The batch is split into disjoint pairs of images with
``perfect_matching`` (gsg's default two-crop pairing: each pair reuses its two images' two crops and is
decided once). It prints the loss, the share of GSG's four cases, and std(z/|z|)·√d (about 1 while the
projections are spread out, 0 for collapsed ones).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from gsg.analysis.collapse import normalized_std_tensor
from gsg.data.datasets import synthetic_images
from gsg.data.views import BatchAugment, make_recipe
from gsg.ssl.stopgrad import perfect_matching, policy_loss


def main() -> None:
    parser = argparse.ArgumentParser(description="GSG in your own training loop")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    images, _ = synthetic_images(1024, image_size=16)  # uint8 (N, 3, 16, 16); labels unused
    augment = BatchAugment(make_recipe("cifar", size=16, mean=(0.5,) * 3, std=(0.25,) * 3))

    # ---- your model: any encoder, a projector ending in BatchNorm, a bottleneck predictor
    encoder = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    projector = nn.Sequential(nn.Linear(64, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
                              nn.Linear(128, 128, bias=False), nn.BatchNorm1d(128, affine=False))
    predictor = nn.Sequential(nn.Linear(128, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 128))
    params = [*encoder.parameters(), *projector.parameters(), *predictor.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)

    # ---- the GSG step: two crops per image, disjoint pairs of images, one policy_loss call
    for step in range(args.steps):
        batch = images[torch.randint(len(images), (args.batch_size,), generator=gen)]
        x_a, x_b = augment(batch, gen), augment(batch, gen)            # two augmented, normalised views
        z_a, z_b = projector(encoder(x_a)), projector(encoder(x_b))    # SimSiam: the targets are z, detached
        pairs = perfect_matching(args.batch_size, generator=gen)       # (B/2, 2) disjoint pairs of images
        out = policy_loss("guided", p1=(predictor(z_a), predictor(z_b)), t1=(z_a, z_b), pairs=pairs)
        optimizer.zero_grad()
        out.loss.backward()                                            # gradients flow through predictions only
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            share = torch.bincount(out.cases, minlength=4).float() / len(out.cases)
            print(f"step {step:4d}  loss {out.loss.item():+.4f}  cases (11,21 11,22 12,21 12,22) "
                  f"{' '.join(f'{s:.2f}' for s in share.tolist())}  "
                  f"std(z/|z|)*sqrt(d) {normalized_std_tensor(z_a.detach()).item():.3f}")


if __name__ == "__main__":
    main()
