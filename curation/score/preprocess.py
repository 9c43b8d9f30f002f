"""Image decoding for scoring: open_clip's own eval transform, split so the work can move.

open_clip's eval transform is ``Resize -> CenterCrop -> convert RGB -> ToTensor -> Normalize``.
:class:`PixelPipeline` splits it at ``ToTensor``: the PIL half runs where images are decoded
(Ray Data read tasks) and yields compact ``uint8`` HWC arrays; the float half
(``/255``, normalise) runs in the model actor. ``ToTensor`` is ``uint8 -> float / 255``, so
the split is bit-for-bit the same computation as calling ``preprocess(img)``.

Pillow's draft mode (``draft=True``) lets the JPEG decoder skip DCT work by decoding at 1/2,
1/4 or 1/8 scale, never below the target size; pixels then differ slightly from a full decode
(which is why ``draft`` is a config switch and the exactness test runs with it off).

The GPU path (:func:`decode_batch_torch` + :func:`resize_normalize`) works on tensors on any
device: ``torchvision.io.decode_jpeg(..., device="cuda")`` batched, then a bicubic
antialiased resize and centre crop in torch. On CPU it is used by tests to check the pieces.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Reasons written to `score_error` (one per unscorable sample, never an exception).
DECODE_ERROR = "decode_error"
TOO_MANY_PIXELS = "too_many_pixels"
MAX_PIXELS = 178_956_970  # Pillow's own bomb limit, made an explicit per-sample reason


@dataclass
class PixelPipeline:
    """The PIL part of an open_clip eval transform plus its normalisation constants.

    For open_clip's usual eval transform (``Resize(int) -> CenterCrop -> convert RGB``) the
    PIL half is kept as plain numbers (``resize``, ``resample``) and run directly with Pillow:
    the same ``Image.resize``/``crop``/``convert`` calls torchvision makes on PIL images,
    without torchvision's per-call dispatch, and picklable without importing torch or
    torchvision (so read tasks stay light). Any other transform list is kept as the
    transform objects themselves (``pil_transforms``) and applied as is.
    """

    pil_transforms: list[Any]
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None = None      # shortest side -> this many px (torchvision int-size Resize)
    resample: int | None = None    # Pillow resampling filter of that Resize

    @classmethod
    def from_preprocess(cls, preprocess: Any) -> "PixelPipeline":
        """Split an open_clip ``Compose`` eval transform at its ``ToTensor`` step."""
        ts = list(getattr(preprocess, "transforms", []))
        cut = next((i for i, t in enumerate(ts) if "ToTensor" in type(t).__name__), None)
        norm = next((t for t in ts if type(t).__name__ == "Normalize"), None)
        if cut is None or norm is None:
            raise ValueError(f"unsupported preprocess transform (no ToTensor/Normalize): {preprocess}")
        crop = next((t for t in ts if type(t).__name__ == "CenterCrop"), None)
        size = int(crop.size[0]) if crop is not None else _resize_size(ts)
        m, sd = [float(x) for x in norm.mean], [float(x) for x in norm.std]
        mean, std = (m[0], m[1], m[2]), (sd[0], sd[1], sd[2])
        fused = _fusable(ts[:cut], size)
        if fused is not None:
            return cls([], size, mean, std, *fused)
        return cls(ts[:cut], size, mean, std)

    def _pil(self, img):
        """Resize (shortest side) -> centre crop -> RGB, exactly as torchvision does on PIL."""
        if self.resize is None:
            for t in self.pil_transforms:
                img = t(img)
            return img
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        ns, nl = self.resize, int(self.resize * long / short)
        nw, nh = (ns, nl) if w <= h else (nl, ns)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), self.resample)
        s = self.size
        top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
        if (nw, nh) != (s, s):
            img = img.crop((left, top, left + s, top + s))
        return img

    def decode(self, data: bytes, draft: bool = True) -> tuple[np.ndarray | None, str | None]:
        """Bytes -> ``uint8`` array ``(size, size, 3)``, or ``(None, reason)``; never raises."""
        from curation.io.images import ImageError, open_image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # palette+transparency notes etc.
                try:
                    img = open_image(data, max_pixels=MAX_PIXELS)
                except ImageError as e:
                    if e.reason in ("too_many_pixels", "over_memory_budget"):
                        return None, f"{TOO_MANY_PIXELS}: {e}"
                    raise
                if draft and img.format == "JPEG":
                    # decode at 1/2..1/8 scale, never below what the resize needs
                    need = self.resize or self.size
                    img.draft("RGB", (need, need))
                img.load()
                img = self._pil(img)
                if img.mode != "RGB":
                    img = img.convert("RGB")
                arr = np.asarray(img, dtype=np.uint8)
        except Exception as e:  # noqa: BLE001 - any decoder failure is this sample's reason
            return None, f"{DECODE_ERROR}: {type(e).__name__}: {str(e)[:120]}"
        if arr.shape != (self.size, self.size, 3):
            return None, f"{DECODE_ERROR}: unexpected decoded shape {arr.shape}"
        return arr, None

    def decode_many(self, datas: Sequence[bytes], draft: bool = True) -> tuple[np.ndarray, list[str]]:
        """Decode a list of images into one ``uint8 (N,S,S,3)`` array plus per-image reasons
        (``""`` when decoded; failed rows are zeros)."""
        pixels = np.zeros((len(datas), self.size, self.size, 3), dtype=np.uint8)
        errors = []
        for i, d in enumerate(datas):
            arr, err = self.decode(d, draft=draft)
            if arr is not None:
                pixels[i] = arr
            errors.append(err or "")
        return pixels, errors

    def to_tensor(self, pixels: np.ndarray, device: str = "cpu", dtype=None):
        """``uint8 (N,H,W,3)`` -> normalised float ``(N,3,H,W)`` exactly as ToTensor+Normalize."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x if dtype is None else x.to(dtype)


def _fusable(ts: Sequence[Any], size: int) -> tuple[int, int] | None:
    """``(resize, pil_resample)`` when the PIL transforms are exactly open_clip's
    ``Resize(int) -> CenterCrop(size) -> [convert RGB]``; None for anything else."""
    names = [type(t).__name__ for t in ts]
    if names[:2] != ["Resize", "CenterCrop"]:
        return None
    for t in ts[2:]:  # open_clip's RGB conversion, as a class (3.x) or a function (older)
        if not (getattr(t, "mode", None) == "RGB" or getattr(t, "__name__", "") == "_convert_to_rgb"):
            return None
    rs, cc = ts[0], ts[1]
    s = rs.size
    if isinstance(s, (list, tuple)):
        if len(s) != 1:
            return None
        s = s[0]
    cs = tuple(cc.size) if isinstance(cc.size, (list, tuple)) else (cc.size, cc.size)
    if getattr(rs, "max_size", None) is not None or cs != (size, size) or int(s) < size:
        return None
    try:
        from torchvision.transforms.functional import pil_modes_mapping

        resample = int(pil_modes_mapping[rs.interpolation])
    except (ImportError, KeyError):
        return None
    return int(s), resample


def _resize_size(ts: Sequence[Any]) -> int:
    for t in ts:
        if type(t).__name__ == "Resize":
            s = t.size
            return int(s if isinstance(s, int) else s[0])
    raise ValueError("preprocess transform has neither CenterCrop nor Resize")


# -- tensor path (GPU fast path; also runs on CPU) -----------------------------------------
def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def decode_batch_torch(datas: Sequence[bytes], device: str) -> list[Any]:
    """Decode JPEGs with torchvision (batched nvjpeg on CUDA); an entry is a ``uint8 (3,H,W)``
    tensor, or a reason string for bytes it could not decode (non-JPEG, corrupt, grey->RGB
    handled by ``mode=RGB``)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[Any] = [None] * len(datas)
    idx = [i for i, d in enumerate(datas) if is_jpeg(d)]
    for i in set(range(len(datas))) - set(idx):
        out[i] = "not_jpeg"
    if not idx:
        return out
    tensors = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in idx]
    try:
        decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    except Exception:  # noqa: BLE001 - one bad JPEG fails nvjpeg's batch: retry one by one
        decoded = []
        for t in tensors:
            try:
                decoded.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except Exception as e:  # noqa: BLE001
                decoded.append(f"{DECODE_ERROR}: {type(e).__name__}: {str(e)[:120]}")
    for i, d in zip(idx, decoded):
        out[i] = d
    return out


def resize_normalize(images: Sequence[Any], pipe: PixelPipeline, dtype=None):
    """``uint8 (3,H,W)`` tensors -> one normalised ``(N,3,S,S)`` batch: shortest side to S
    (bicubic, antialiased, like torchvision's Resize on tensors), then centre crop."""
    import torch
    import torch.nn.functional as F

    s = pipe.size
    outs = []
    for im in images:
        h, w = im.shape[-2:]
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(im.unsqueeze(0).float(), size=(nh, nw), mode="bicubic",
                          antialias=True, align_corners=False).clamp_(0, 255).round_()
        top, left = (nh - s) // 2, (nw - s) // 2
        outs.append(x[:, :, top:top + s, left:left + s])
    x = torch.cat(outs).div_(255)
    dev = x.device
    mean = torch.tensor(pipe.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pipe.std, device=dev).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x if dtype is None else x.to(dtype)
