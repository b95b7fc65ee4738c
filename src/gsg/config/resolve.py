"""The values a run uses where a key is unset: temperature, queue size, pairing, crops per image."""

from __future__ import annotations

from gsg.config.schema import SMALL_IMAGE, SSLConfig


def resolved_temperature(ssl: SSLConfig, image_size: int) -> float:
    """τ of simclr/moco: ``ssl.temperature``, else SimCLR's 0.5 at CIFAR size (up to 64 px; SimCLR's CIFAR-10
    setting, Appendix B.9) or 0.1 above (its ImageNet setting), MoCo v2's 0.2 at any size."""
    if ssl.temperature is not None:
        return ssl.temperature
    if ssl.method == "moco":
        return 0.2
    return 0.5 if image_size <= SMALL_IMAGE else 0.1


def resolved_queue_size(ssl: SSLConfig, image_size: int) -> int:
    """MoCo's K: ``ssl.queue_size``, else 65536 (MoCo's ImageNet value) above 64 px and 4096 (MoCo's CIFAR-10
    demo) up to 64 px, where data sets are small."""
    if ssl.queue_size is not None:
        return ssl.queue_size
    return 4096 if image_size <= SMALL_IMAGE else 65536


def resolved_pairing(ssl: SSLConfig) -> str:
    """The pairing a run uses: ``ssl.pairing``, or matching for reuse and cycle for fresh when it is unset."""
    return ssl.pairing or ("cycle" if ssl.views == "fresh" else "matching")


def crops_per_image(views: str | None) -> int:
    """Crops each image is augmented into and encoded per step: 4 for ``views = fresh``, else 2."""
    return 4 if views == "fresh" else 2
