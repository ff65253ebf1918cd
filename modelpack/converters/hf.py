"""A Hugging Face model folder (config.json + safetensors weights) -> a full model .mpk.

transformers is imported here only, at convert time; the .mpk it produces
loads with ``load_model`` and no transformers at all. The model is built on
the meta device from config.json (``trust_remote_code`` is never set, and
the class comes from transformers' own auto mappings, never by a name
looked up on a module), transformers assigns the memory-mapped safetensors
weights (pickled ``.bin`` weights are refused), and the model then goes
through ``modelpack.export``, which checks the rebuilt model against it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConvertError, MissingDependencyError
from .weights import INDEX_NAME

__all__ = ["hf_model_to_mpk", "HF_TASKS"]

# auto classes tried in order; the first whose mapping holds config.json's architecture wins
HF_TASKS = ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
            "AutoModelForImageClassification", "AutoModel")


def _model_class(transformers: Any, config: Any) -> Any:
    arch = (getattr(config, "architectures", None) or [None])[0]
    for task in HF_TASKS:
        auto = getattr(transformers, task)  # a constant name from HF_TASKS, never from the file
        cls = auto._model_mapping.get(type(config), None)
        if cls is not None and (arch is None or cls.__name__ == arch or task == "AutoModel"):
            return cls
    raise ConvertError(f"transformers has no model class for {type(config).__name__} ({arch})")


def load_hf_model(src: str | os.PathLike[str]) -> Any:
    """The folder's model in eval mode: transformers builds it on the meta device and assigns the mapped weights.

    ``use_safetensors=True``: pickled ``.bin`` weights are refused, never unpickled.
    """
    try:
        import transformers
    except ImportError as e:
        raise MissingDependencyError("converting a Hugging Face folder needs transformers: "
                                     "pip install 'modelpack[hf]'") from e
    folder = Path(src)
    if not (folder / "model.safetensors").is_file() and not (folder / INDEX_NAME).is_file():
        raise ConvertError("no safetensors weights (model.safetensors or model.safetensors.index.json); "
                           "modelpack never unpickles .bin weights", source=str(folder))
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    cls = _model_class(transformers, config)
    model = cls.from_pretrained(folder, config=config, local_files_only=True, trust_remote_code=False,
                                use_safetensors=True)
    return model.eval()


def hf_model_to_mpk(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, sha256: bool = False,
                    progress: bool | None = None, seq_len: int = 8) -> None:
    """Build, load and export: the example input is ``input_ids`` of shape [2, seq_len] (no KV cache)."""
    import torch

    from ..torch.export import export

    if sha256:
        raise ConvertError("--sha256 is not available for a Hugging Face model yet (the exporter writes the "
                           "pack); convert, then re-save the weights with sha256=True", source=os.fspath(src))
    model = load_hf_model(src)
    vocab = int(getattr(model.config, "vocab_size", 2) or 2)
    # batch 2: torch.export specialises a size of 1, and the batch should stay symbolic
    example: dict[str, Any] = {"input_ids": torch.arange(2 * seq_len).reshape(2, seq_len) % vocab}
    if hasattr(model.config, "use_cache"):
        example["use_cache"] = False  # the forward pass itself, without a KV cache object in its outputs
    del progress  # the exporter shows no progress bar
    export(model, dst, example_inputs=example, metadata={"converted_from": "transformers",
                                                         "architecture": type(model).__name__})
