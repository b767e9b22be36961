"""Pooling of one layer's token states on the device: last prompt token, masked means, CLS.

Every function takes hidden states ``(batch, seq, hidden)`` in the model's dtype and returns
float32 ``(batch, hidden)``; sums run in float32 whatever the compute dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenMasks:
    """Which positions of a batch are real tokens and which are image tokens (bool, on the device).

    ``attention`` and ``image`` are ``(batch, seq)``; None means every position.
    """

    attention: torch.Tensor | None = None
    image: torch.Tensor | None = None


def last_token(hidden: torch.Tensor, attention: torch.Tensor | None) -> torch.Tensor:
    """The state at the last non-padding position of each row (works for left and right padding)."""
    if attention is None:
        return hidden[:, -1].float()
    positions = torch.arange(attention.shape[1], device=attention.device)
    last = (attention.long() * positions).amax(dim=-1)  # the largest position that is a real token
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last.to(hidden.device)].float()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the positions where ``mask`` is True (all positions when None)."""
    if mask is None:
        return hidden.float().mean(dim=1)
    weights = mask.to(device=hidden.device, dtype=torch.float32)
    sums = torch.bmm(weights.unsqueeze(1), hidden.float()).squeeze(1)
    return sums / weights.sum(dim=1, keepdim=True)


def image_tokens(hidden: torch.Tensor, masks: TokenMasks) -> torch.Tensor:
    """The image-token positions of every row, in sequence order: ``(batch, image tokens, hidden)``; every row must
    hold as many."""
    from medprobe.errors import InvalidInputError

    if masks.image is None:
        raise ValueError("tokens needs an image-token mask")
    image = masks.image if masks.attention is None else masks.image & masks.attention
    counts = image.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise InvalidInputError(f"--tokens: the images of a batch have different numbers of image tokens "
                                f"({sorted(set(counts.tolist()))}); this model sizes its token grid by the image")
    return hidden[image.to(hidden.device)].reshape(hidden.shape[0], int(counts[0]), hidden.shape[-1])


def pool_tokens(name: str, hidden: torch.Tensor, masks: TokenMasks) -> torch.Tensor:
    """Apply the named token pooling (last, mean, image_mean, cls; ``tokens``: every image token, flattened) to
    ``hidden``."""
    if name == "tokens":
        return image_tokens(hidden, masks).float().reshape(hidden.shape[0], -1)
    if name == "last":
        return last_token(hidden, masks.attention)
    if name == "mean":
        return masked_mean(hidden, masks.attention)
    if name == "image_mean":
        if masks.image is None:
            raise ValueError("image_mean needs an image-token mask")
        image = masks.image if masks.attention is None else masks.image & masks.attention
        return masked_mean(hidden, image)
    if name == "cls":
        return hidden[:, 0].float()
    raise ValueError(f"unknown token pooling {name!r}")
