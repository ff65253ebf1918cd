"""Tiny Hugging Face models built from their config classes (random weights, no network), with inputs.

Each entry: a builder returning an eval-mode model, and a function giving example
keyword inputs for (batch, seq); the second shape checks the dynamic sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_TEXT = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def _ids(batch: int, seq: int, vocab: int = 128) -> dict[str, Any]:
    g = torch.Generator().manual_seed(batch * 100 + seq)
    return {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g)}


def _decoder(name: str, **extra: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import transformers

        config = getattr(transformers, f"{name}Config")(**{**_TEXT, **extra})
        return getattr(transformers, f"{name}ForCausalLM")(config)
    return build


def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64))


def _bert_inputs(batch: int, seq: int) -> dict[str, Any]:
    inputs = _ids(batch, seq)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0  # padding in the first row: the mask matters
    return {**inputs, "attention_mask": mask}


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))


def _t5() -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))


def _vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64), add_pooling_layer=False)


def _image(batch: int, seq: int) -> dict[str, Any]:
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))}


def _whisper() -> torch.nn.Module:
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                           max_source_positions=16, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    return WhisperModel(config).get_encoder()


def _audio(batch: int, seq: int) -> dict[str, Any]:
    return {"input_features": torch.randn(batch, 16, 32, generator=torch.Generator().manual_seed(batch))}


def _resnet() -> torch.nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                     num_labels=5))


# name -> (builder, inputs(batch, seq), keyword arguments fixed at export)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[int, int], dict[str, Any]], dict[str, Any]]] = {
    "bert": (_bert, _bert_inputs, {}),
    "gpt2": (_gpt2, _ids, {}),
    "llama": (_decoder("Llama"), _ids, {}),
    "mistral": (_decoder("Mistral"), _ids, {}),
    "qwen2": (_decoder("Qwen2"), _ids, {}),
    "gemma": (_decoder("Gemma", head_dim=8), _ids, {}),
    "t5_encoder": (_t5, _ids, {}),
    "vit": (_vit, _image, {}),
    "whisper_encoder": (_whisper, _audio, {}),
    "resnet": (_resnet, _image, {}),
}
