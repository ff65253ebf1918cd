"""torch state dicts (.pt/.pth/.bin) -> .mpk, read only through ``torch.load(weights_only=True)``.

weights_only is torch's restricted unpickler: it builds tensors, containers
and primitive types and refuses every other global. Whatever it refuses stays
refused; modelpack never falls back to a full unpickle.
"""

from __future__ import annotations

import os
import zipfile

from .. import api
from ..errors import ConvertError

__all__ = ["state_dict_to_mpk"]


def state_dict_to_mpk(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, sha256: bool = False,
                      progress: bool | None = None) -> None:
    """Load with weights_only (mapped when the file is torch's zip format) and save every tensor and value."""
    import pickle

    import torch

    path = os.fspath(src)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(
            f"torch.load(weights_only=True) refused it: {first[:300]}. modelpack never unpickles anything else; "
            "load it in a trusted environment and save the tensors you need", source=path) from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise ConvertError(f"not a torch checkpoint torch.load can read: {str(e)[:300]}", source=path) from e
    api.save(obj, dst, sha256=sha256, progress=progress)
