"""Launch a continual run on one process, under torchrun, or as a Ray Train ``TorchTrainer``.

``torchrun --nproc-per-node N -m curation.train.trainer RUN.yaml`` runs DDP with gloo on CPU
(each rank joins the group in ``run_continual``). ``backend: ray`` starts ``num_workers`` Ray
Train workers; Ray sets up the process group and each worker runs the same loop.
"""
from __future__ import annotations

import sys

from curation.train.config import RunConfig
from curation.train.run import load_run_config, run_continual


def launch(cfg: RunConfig) -> dict:
    """Run ``cfg`` with its backend and return the forgetting summary (read back from disk for Ray)."""
    if cfg.backend != "ray":
        return run_continual(cfg)
    import json
    import os

    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from curation.cluster import ensure_ray

    ensure_ray()
    trainer = TorchTrainer(_ray_worker, train_loop_config={"spec": cfg.model_dump(mode="json")},
                           scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=False),
                           torch_config=TorchConfig(backend="gloo"))
    trainer.fit()
    with open(os.path.join(cfg.out, "summary.json")) as f:
        return json.load(f)["metrics"]


def _ray_worker(config: dict) -> None:
    import torch

    torch.set_num_threads(1)
    run_continual(RunConfig.parse(config["spec"], where="run"))


if __name__ == "__main__":  # torchrun entry point
    run_continual(load_run_config(sys.argv[1], {"backend": "torchrun"}))
