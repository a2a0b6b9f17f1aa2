"""A device-resident loader: the whole uint8 dataset sits on the device and every batch is
gathered, augmented and converted there, with no per-image Python and no DataLoader.

Randomness comes from the loader's own CPU ``torch.Generator``: at the start of each pass
it draws the epoch's permutation and every sample's crop offsets and flip bits at once
(``O(N)`` numbers, copied to the device once per epoch). Its state is the loader's whole
state, so a checkpoint taken between epochs resumes the exact sample order.

Distributed runs: ``batch_size`` is the *global* batch. Every rank draws the same epoch
plan and takes its ``batch_size / world_size`` slice of each global batch, so a run on W
processes sees exactly the batches of a single-process run with the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .datasets import ImageSet


def crop_flip(images: Tensor, oy: Tensor, ox: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Random crop with zero padding and horizontal flip, vectorised over the batch.

    Args:
        images: ``(B, C, H, W)`` any dtype (uint8 in the loader).
        oy, ox: ``(B,)`` int64 crop offsets in ``[0, 2*pad]`` into the padded image.
        flip: ``(B,)`` bool, mirror the crop horizontally.
        pad: zero padding on every side (pixels, >= 0).
    Returns:
        ``(B, C, H, W)`` with channels-last strides (the gather produces ``(B, H, W, C)``).
    """
    B, C, H, W = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    ar_h = torch.arange(H, device=images.device)
    ar_w = torch.arange(W, device=images.device)
    rows = oy[:, None] + ar_h                                                   # (B, H)
    cols = ox[:, None] + torch.where(flip[:, None], (W - 1) - ar_w, ar_w)      # (B, W)
    b = torch.arange(B, device=images.device)[:, None, None]
    out = padded[b, :, rows[:, :, None], cols[:, None, :]]                     # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


class DeviceLoader:
    """Iterate ``(x, y, idx)`` batches of an :class:`ImageSet` held on ``device``.

    Yields:
        x: float32 ``(b, C, H, W)`` in ``[0, 1]`` (channels-last if asked), y: int64 ``(b,)``,
        idx: int64 ``(b,)`` indices into the dataset (GIF and other per-sample state need them).

    Args:
        data: the images (uint8) and labels.
        batch_size: the global batch size (divisible by ``world_size`` when ``shuffle``).
        shuffle: draw a new permutation each pass (training); otherwise dataset order,
            and each rank takes a strided shard (evaluation).
        drop_last: drop the incomplete last batch (default: ``shuffle``); static shapes
            for CUDA graphs and torch.compile.
        crop: zero-padding of the random crop in pixels (0 disables it).
        flip: random horizontal flips.
        device: where the data and batches live.
        seed: seed of the loader's generator.
        rank, world_size: this process's place in a distributed run.
        channels_last: yield channels-last batches.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool = True, drop_last: bool | None = None,
                 crop: int = 0, flip: bool = False, device="cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        if shuffle and batch_size % world_size:
            raise ValueError(f"batch_size (the global batch) must be divisible by world_size={world_size}, "
                             f"got {batch_size}")
        if crop < 0:
            raise ValueError(f"crop must be >= 0, got {crop}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.n = len(data)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = shuffle if drop_last is None else drop_last
        self.crop, self.flip = int(crop), bool(flip)
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        if self.drop_last and self.n < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the dataset size {self.n} with drop_last")

    # the number of samples each pass covers, and batches per pass on this rank
    def __len__(self) -> int:
        if self.shuffle:
            return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)
        shard = len(range(self.rank, self.n, self.world_size))
        return shard // self.batch_size if self.drop_last else -(-shard // self.batch_size)

    @property
    def samples_per_epoch(self) -> int:
        """Samples one pass feeds to all ranks together."""
        if self.shuffle and self.drop_last:
            return len(self) * self.batch_size
        return self.n

    def fetch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Training samples by dataset index, unaugmented: ``idx`` int64 ``(n,)`` on the device ->
        ``(x float32 (n, C, H, W) in [0, 1], y int64 (n,))`` in the loader's memory format."""
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.images[idx].to(torch.float32, memory_format=fmt).div_(255.0), self.labels[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _plan(self):
        augment = self.crop > 0 or self.flip
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator)
        else:
            order = torch.arange(self.rank, self.n, self.world_size)
        oy = ox = flip = None
        if augment and self.shuffle:
            m = order.shape[0]
            oy = torch.randint(0, 2 * self.crop + 1, (m,), generator=self.generator)
            ox = torch.randint(0, 2 * self.crop + 1, (m,), generator=self.generator)
            flip = (torch.rand(m, generator=self.generator) < 0.5) if self.flip else torch.zeros(m, dtype=torch.bool)
            oy, ox, flip = oy.to(self.device), ox.to(self.device), flip.to(self.device)
        return order.to(self.device), oy, ox, flip

    def __iter__(self):
        order, oy, ox, flip = self._plan()
        if self.shuffle:
            per_rank = self.batch_size // self.world_size
            starts = [b * self.batch_size + self.rank * per_rank for b in range(len(self))]
            spans = [(s, min(s + per_rank, order.shape[0])) for s in starts]
            if not self.drop_last:  # the short last global batch: split it evenly across ranks
                b = len(self) - 1
                lo, hi = b * self.batch_size, order.shape[0]
                k = -(-(hi - lo) // self.world_size)
                spans[-1] = (min(lo + self.rank * k, hi), min(lo + (self.rank + 1) * k, hi))
        else:
            spans = [(s, min(s + self.batch_size, order.shape[0])) for s in range(0, order.shape[0], self.batch_size)]
            spans = spans[:len(self)]
        for lo, hi in spans:
            idx = order[lo:hi]
            imgs = self.images[idx]
            if oy is not None:
                imgs = crop_flip(imgs, oy[lo:hi], ox[lo:hi], flip[lo:hi], self.crop)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            x = imgs.to(torch.float32, memory_format=fmt).div_(255.0)
            yield x, self.labels[idx], idx
