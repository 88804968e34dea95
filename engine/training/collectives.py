"""The few collectives a distributed run needs beyond DDP's, on tensors only.

Nothing here pickles: text travels as UTF-8 bytes in a uint8 tensor, rows of any shape as
padded tensors whose real lengths are exchanged first. Tensors go through the backend's
device (the current GPU for NCCL, the CPU for gloo) and come back where they were.
Call these only while a process group is initialised, on every rank, in the same order.
"""

from __future__ import annotations

import math

import torch


def comm_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_text(text: str | None) -> str:
    """Rank 0's ``text`` on every rank (as bytes in a tensor: nothing is pickled)."""
    device = comm_device()
    main = torch.distributed.get_rank() == 0
    data = (text or "").encode("utf-8", "surrogateescape") if main else b""
    length = torch.tensor([len(data)], dtype=torch.long, device=device)
    torch.distributed.broadcast(length, 0)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    if main and data:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    torch.distributed.broadcast(buffer, 0)
    return buffer.cpu().numpy().tobytes().decode("utf-8", "surrogateescape")


_DTYPES = (torch.float32, torch.int64, torch.float16, torch.bfloat16, torch.float64,
           torch.uint8, torch.int32)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of every rank's ``tensor`` concatenated in rank order, on every rank.

    Ranks may hold different numbers of rows, none included: the shapes and dtype are
    exchanged first, each rank pads to the longest, and the padding is cut off again.
    """
    device = comm_device()
    size = torch.distributed.get_world_size()
    rows = tensor.shape[0]
    width = int(math.prod(tensor.shape[1:]))
    code = _DTYPES.index(tensor.dtype) if tensor.dtype in _DTYPES else 0
    header = torch.tensor([rows, width, code, tensor.dim()], dtype=torch.long, device=device)
    headers = [torch.zeros_like(header) for _ in range(size)]
    torch.distributed.all_gather(headers, header)
    table = [h.cpu().tolist() for h in headers]
    shaped = [h for h in table if h[0] > 0] or table[:1]
    _, width, code, dim = shaped[0]
    dtype = _DTYPES[code]
    longest = max(h[0] for h in table)
    if longest == 0:
        return tensor
    padded = torch.zeros(longest, width, dtype=dtype, device=device)
    if rows:
        padded[:rows] = tensor.reshape(rows, width).to(device=device, dtype=dtype)
    parts = [torch.empty_like(padded) for _ in range(size)]
    torch.distributed.all_gather(parts, padded)
    whole = torch.cat([part[: h[0]] for part, h in zip(parts, table, strict=True)])
    home = tensor.device
    if dim <= 1:
        return whole.reshape(-1).to(home)
    return whole.reshape(-1, *(tensor.shape[1:] if rows else (width,))).to(home)
