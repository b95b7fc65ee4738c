"""Copy sym2x2-s0's checkpoint at the epochs the quickstart question needs (a constant-lr run: its weights at
epoch N are an N-epoch run's)."""
import shutil, time

from gsg.checkpoint import load_checkpoint  # weights only: a checkpoint never runs code
from pathlib import Path
src = Path("runs/reproduce-cpu2/simsiam_sym2x2-s0/checkpoint.pt")
want = {4, 6, 8, 10}
last = 0.0
while want:
    try:
        m = src.stat().st_mtime
        if m != last:
            time.sleep(5)
            ep = load_checkpoint(src)["train_state"]["epoch"]
            last = m
            if ep in want:
                shutil.copy(src, f"runs/qs3/sym2x2_ep{ep}.pt")
                want.discard(ep)
                print("copied", ep, flush=True)
    except Exception as e:  # mid-write: try again
        print("retry", e, flush=True)
    time.sleep(20)
