"""A .mpk model -> ONNX: rebuild with ``load_model``, then ``torch.onnx.export(dynamo=True)``.

Each symbolic input dim of the spec (``batch``, ``seq``...) becomes a dynamic
ONNX dim of the same name; fixed dims stay fixed. Example inputs are made
from the declared shapes (distinct sizes >= 2 per symbolic dim, so the
exporter never specializes or equates them by accident).
"""

from __future__ import annotations

import os
from typing import Any

from .. import _fs
from ..codec import dtype_by_name
from ..errors import ConvertError, MissingDependencyError

__all__ = ["mpk_to_onnx", "example_inputs"]

_SIZES = (3, 5, 7, 11, 13, 17, 19, 23)


def example_inputs(declared: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[int, Any]]]:
    """Example tensors by input name, and torch.export dynamic shapes for the symbolic dims."""
    import torch

    from ..torch.tensors import torch_dtype

    sizes: dict[str, int] = {}
    examples, dynamic = {}, {}
    for name, decl in declared.items():
        shape, dims = [], {}
        for i, d in enumerate(decl["shape"]):
            if isinstance(d, int):
                shape.append(d)
                continue
            size = sizes.setdefault(d, _SIZES[len(sizes) % len(_SIZES)])
            shape.append(size)
            dims[i] = torch.export.Dim(str(d), min=1)
        dtype = torch_dtype(dtype_by_name(decl.get("dtype", "float32")))
        g = torch.Generator().manual_seed(len(examples))
        if dtype.is_floating_point:
            examples[name] = torch.randn(shape, generator=g).to(dtype)
        else:
            examples[name] = torch.randint(0, 2, shape, generator=g).to(dtype)
        dynamic[name] = dims
    return examples, dynamic


def mpk_to_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, opset: int | None = None) -> None:
    """Export the packed model to one .onnx file (written atomically), dynamic dims kept."""
    import torch

    try:
        import onnxscript  # noqa: F401  - torch.onnx's dynamo exporter needs it
    except ImportError as e:
        raise MissingDependencyError("ONNX export needs onnx and onnxscript: pip install 'modelpack[onnx]'") from e
    from ..torch.load import load_model

    model = load_model(src)
    spec = model.spec
    examples, dynamic = example_inputs(spec["inputs"])
    try:
        # forward(*inputs) binds positionally in declared order; dynamic shapes then go per positional arg
        program = torch.onnx.export(model, tuple(examples.values()), dynamic_shapes=[tuple(dynamic.values())],
                                    dynamo=True,
                                    input_names=list(examples), opset_version=opset, verbose=False)
    except Exception as e:  # the exporter raises many types; name the model and keep the cause
        raise ConvertError(f"torch.onnx.export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}",
                           source=os.fspath(src)) from e
    data = program.model_proto.SerializeToString()
    with _fs.atomic_write(dst) as fd:
        view = memoryview(data)
        while view.nbytes:
            view = view[os.write(fd, view[: 64 << 20]) :]
