"""``modelpack.convert``: between .mpk and safetensors, torch state dicts, Hugging Face folders and ONNX.

One module per foreign format; this one only picks the format of each side
(by extension, folder contents, or ``src_format``/``dst_format``) and calls
the converter for the pair. torch, transformers and onnx are imported only by
the converters that need them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConvertError

__all__ = ["convert", "FORMATS", "detect_format"]

FORMATS = ("mpk", "safetensors", "torch", "hf", "onnx")
_BY_SUFFIX = {".mpk": "mpk", ".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".bin": "torch",
              ".onnx": "onnx"}
_PAIRS = "mpk <- safetensors (file or sharded folder), torch, hf; mpk -> safetensors (file or folder), onnx"


def detect_format(path: str | os.PathLike[str], *, source: bool) -> str:
    """The format of one side: its extension, or for a source folder what it holds."""
    p = Path(path)
    if source and p.is_dir():
        if (p / "config.json").is_file():
            return "hf"
        if (p / "model.safetensors.index.json").is_file():
            return "safetensors"
        raise ConvertError("a folder to convert needs config.json (a Hugging Face model) or "
                           "model.safetensors.index.json (sharded weights), or to be a distributed checkpoint folder "
                           "(metadata.mpk, as written by modelpack.dcp.MpkStorageWriter)", source=str(p))
    fmt = _BY_SUFFIX.get(p.suffix.lower())
    if fmt is None:
        if not source and not p.suffix:  # a new folder name: sharded safetensors
            return "safetensors"
        raise ConvertError(f"cannot tell the format from the name; pass {'--from' if source else '--to'} "
                           f"(one of {', '.join(FORMATS)})", source=str(p))
    return fmt


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    sha256: bool = False,
    progress: bool | None = None,
) -> None:
    """Convert ``src`` to ``dst`` tensor by tensor (bounded memory); formats from the names unless given.

    ``sha256`` records per-tensor SHA-256 in a .mpk output (see ``save``).
    """
    src_fmt = src_format or detect_format(src, source=True)
    dst_fmt = dst_format or detect_format(dst, source=False)
    for fmt in (src_fmt, dst_fmt):
        if fmt not in FORMATS:
            raise ConvertError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if dst_fmt == "mpk":
        return _to_mpk(src_fmt, src, dst, sha256=sha256, progress=progress)
    if src_fmt == "mpk":
        return _from_mpk(dst_fmt, src, dst)
    raise ConvertError(f"cannot convert {src_fmt} to {dst_fmt}: one side must be mpk ({_PAIRS})")


def _to_mpk(fmt: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> None:
    if fmt == "safetensors":
        from .weights import safetensors_to_mpk, sharded_to_mpk

        return (sharded_to_mpk if Path(src).is_dir() else safetensors_to_mpk)(src, dst, **kw)  # type: ignore[arg-type]
    if fmt == "torch":
        from .state_dict import state_dict_to_mpk

        return state_dict_to_mpk(src, dst, **kw)  # type: ignore[arg-type]
    if fmt == "hf":
        from .hf import hf_model_to_mpk

        return hf_model_to_mpk(src, dst, **kw)  # type: ignore[arg-type]
    raise ConvertError(f"cannot convert {fmt} to mpk ({_PAIRS})")


def _from_mpk(fmt: str, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    if fmt == "safetensors":
        from .weights import mpk_to_safetensors, mpk_to_sharded

        (mpk_to_safetensors if Path(dst).suffix == ".safetensors" else mpk_to_sharded)(src, dst)
        return None
    if fmt == "onnx":
        from .onnx import mpk_to_onnx

        return mpk_to_onnx(src, dst)
    raise ConvertError(f"cannot convert mpk to {fmt} ({_PAIRS})")
