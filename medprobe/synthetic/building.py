"""What the random-weight model builders share: the tiny text and vision shapes, byte-level tokenizers, the seeded
build and instantiation on a device in a dtype."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    pass

SEED = 0
TINY_PREFIX = "tiny-random/"
FULL_PREFIX = "random-full/"

# the text model shared by the tiny decoders: 3 blocks, hidden 32, 4 heads of 8
TEXT: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
# the vision tower shared by the tiny models: 32 px images, 8 px patches -> 16 patches
VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def byte_level_tokenizer(special: list[str], named: dict[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges: ``<pad> <s> </s> <unk>``, then ``special``, then 256 bytes.

    ``named`` maps extra attribute names (``image_token``...) to tokens of ``special``.
    """
    base = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(base + special + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in base + special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=named or {},
        padding_side="right",
    )


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token of ``tokenizer``."""
    got = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(got, int):
        raise TypeError(f"{token!r} is not one token of this tokenizer: {got}")
    return got


@dataclass(frozen=True)
class Built:
    """A random-weight model and its processor (an image processor for vision towers)."""

    model: torch.nn.Module
    processor: object


def seeded(build: Callable[[], Built]) -> Built:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return build()


def instantiate(model_cls: Any, config: object, device: str | None = None, dtype: str = "fp32") -> torch.nn.Module:
    from medprobe.adapters.loading import torch_dtype

    with torch.device(device or "cpu"):
        model = model_cls._from_config(config, dtype=torch_dtype(dtype))
    return model.eval()
