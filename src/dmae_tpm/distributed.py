"""Gathering features across ranks so the contrastive losses see the global batch with exact gradients.

`gather_with_grad` is an all_gather whose backward sums, over ranks, the gradient each rank's loss sends to every
slice and hands each rank its own slice's sum. Every rank computes the same global loss, so a rank receives
world_size x its share of dL/dx, and DDP's gradient averaging divides that back: N processes with batch B/N
give the gradients of one process with batch B. (CLIP4Clip's AllGather returns only the local slice of the
gradient, which is not exact.) torch's own `torch.distributed.nn.functional.all_gather` does the same but is
deprecated, and its suggested replacement is a private module; this is plain `all_gather` + `all_reduce`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .features import map_fields


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier() -> None:
    """Wait for every rank; nothing to wait for in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _AllGather(torch.autograd.Function):
    """x (B, ...) -> (world * B, ...), rank-major; backward: the gradient of the whole, summed over ranks
    (all_reduce), then this rank's slice of it."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)  # reduced in place; gloo needs it dense
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (world * B, ...), rank-major, differentiable. Ranks must agree on B."""
    if world_size() == 1:
        return x
    return _AllGather.apply(x.contiguous())


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """For masks and other tensors that carry no gradient (bool tensors included)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _gather_tensor(x: torch.Tensor) -> torch.Tensor:
    return gather_with_grad(x) if x.requires_grad else gather_no_grad(x)


def gather_features(x):
    """The methods' `gather` hook: a method's embedding (a dataclass of (B, ...) tensors, see method.py) for the
    global batch, with exact gradients through the tensors that carry one (masks and weights: none)."""
    if world_size() == 1:
        return x
    return map_fields(_gather_tensor, x)


def gather_varsize(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order when the n_r differ (evaluation shards)."""
    if world_size() == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    longest = int(max(s.item() for s in sizes))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
