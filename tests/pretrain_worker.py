"""Subprocess entry point for the SIGTERM and two-process tests: train tiny settings, dump params.

Writes ``<out>/started`` after the first optimizer step, when the loop's signal handlers are in
place, so that a test's SIGTERM can never arrive before them (a race under CPU contention).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _pretrain_tiny import dataset, settings

from brainssl.pretrain import train

if __name__ == "__main__":
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    method, out, extra = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    import hashlib
    import os

    import brainssl.pretrain.loop as loop

    original_save = loop.Trainer.save

    def save_and_hash(self):  # every rank records a hash of its parameters at each save
        original_save(self)
        blob = b"".join(p.detach().numpy().tobytes() for p in self.method.parameters())
        rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))  # torchrun or srun
        (out / f"params-rank{rank}.txt").write_text(hashlib.sha256(blob).hexdigest())

    original_step = loop.Trainer.train_step

    def step_and_announce(self, micro):
        stats = original_step(self, micro)
        if self.step == 1:
            (out / "started").write_text("")
        return stats

    loop.Trainer.save = save_and_hash
    loop.Trainer.train_step = step_and_announce
    out.mkdir(parents=True, exist_ok=True)
    summary = train(settings(method, **extra), dataset(32), None, out, resume=True)
    print(json.dumps({"status": summary["status"], "step": summary["step"]}), flush=True)
