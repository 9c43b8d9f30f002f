"""Resumable training state: weights, optimizer tensors and loader position, no pickle.

A state folder ``checkpoints/s<slice>-<step>/`` holds ``model.safetensors``,
``optim.safetensors`` (every AdamW state tensor, flattened as ``<param>.<name>``) and
``state.json`` (slice, step, sampler state, exposure ledger, optimizer hyper-parameters).
It is written in a temporary folder and renamed into place, so a killed run never sees a
half-written state; :func:`latest_state` returns the newest complete one.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _flatten_optim(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"{pid}.{name}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
               for pid, st in sd["state"].items() for name, v in st.items()}
    return tensors, sd["param_groups"]


def _unflatten_optim(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": groups}


def save_state(out: str, model: torch.nn.Module, opt: torch.optim.Optimizer | None, state: dict[str, Any]) -> str:
    """Atomically write a state folder for ``(state['slice'], state['step'])``; returns its path."""
    root = os.path.join(out, "checkpoints")
    final = os.path.join(root, f"s{state['slice']:03d}-{state['step']:07d}")
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              os.path.join(tmp, "model.safetensors"))
    if opt is not None:
        tensors, groups = _flatten_optim(opt)
        save_file(tensors, os.path.join(tmp, "optim.safetensors"))
        state = {**state, "optimizer_param_groups": groups}
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(state, f, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def latest_state(out: str) -> str | None:
    """Newest complete state folder under ``out/checkpoints`` (by slice, then step)."""
    root = os.path.join(out, "checkpoints")
    if not os.path.isdir(root):
        return None
    done = sorted(d for d in os.listdir(root)
                  if not d.endswith(".tmp") and os.path.exists(os.path.join(root, d, "state.json")))
    return os.path.join(root, done[-1]) if done else None


def load_state(path: str, model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Restore weights (and optimizer, when saved) from ``path``; returns ``state.json``."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    optim_file = os.path.join(path, "optim.safetensors")
    if opt is not None and os.path.exists(optim_file):
        opt.load_state_dict(_unflatten_optim(load_file(optim_file), state["optimizer_param_groups"]))
    return state
