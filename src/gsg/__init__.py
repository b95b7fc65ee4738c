"""gsg: non-contrastive self-supervised learning that does not collapse (Guided Stop-Gradient)."""

from __future__ import annotations

__version__ = "0.1.0"
