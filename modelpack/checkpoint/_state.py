"""Training state <-> a plain tree modelpack can save: components, RNG streams, generators.

Everything here turns live objects into dicts/lists/tuples/scalars/tensors and
back, so a checkpoint holds no pickle and restoring one runs no code from the
file. torch is imported only when the state involves it.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from ..errors import CheckpointError

__all__ = [
    "component_state",
    "load_component",
    "capture_rng",
    "apply_rng",
    "capture_generators",
    "apply_generators",
]


# --------------------------------------------------------------------------- components


def component_state(obj: Any, what: str) -> Any:
    """``obj.state_dict()``, or a list/dict of them mirroring how ``obj`` was given."""
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        return obj.state_dict()
    if isinstance(obj, (list, tuple)):
        return [component_state(o, f"{what}[{i}]") for i, o in enumerate(obj)]
    if isinstance(obj, Mapping):
        return {_key(k, what): component_state(o, f"{what}[{k!r}]") for k, o in obj.items()}
    raise TypeError(
        f"{what}: a {type(obj).__name__!r} has no state_dict()/load_state_dict(); pass the object "
        "itself, or a list or dict of such objects"
    )


def _key(k: Any, what: str) -> str:
    if not isinstance(k, str):
        raise TypeError(f"{what}: dict keys must be str, not {type(k).__name__!r} ({k!r})")
    return k


def load_component(obj: Any, state: Any, what: str, *, strict: bool = True) -> None:
    """Feed saved state back into ``obj``; the list/dict shape must match the one saved."""
    if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
        if not isinstance(state, Mapping):
            raise CheckpointError(f"expected one state dict, found a {type(state).__name__}", where=what)
        _call_load(obj, state, what, strict)
    elif isinstance(obj, (list, tuple)):
        if not isinstance(state, list) or len(state) != len(obj):
            raise CheckpointError(f"{_shape(obj)} given, but the checkpoint holds {_shape(state)}", where=what)
        for i, (o, s) in enumerate(zip(obj, state)):
            load_component(o, s, f"{what}[{i}]", strict=strict)
    elif isinstance(obj, Mapping):
        if not isinstance(state, Mapping) or set(state) != set(obj):
            raise CheckpointError(f"{_shape(obj)} given, but the checkpoint holds {_shape(state)}", where=what)
        for k, o in obj.items():
            load_component(o, state[k], f"{what}[{k!r}]", strict=strict)
    else:
        component_state(obj, what)  # raises the TypeError that explains what is accepted


def _call_load(obj: Any, state: Mapping[str, Any], what: str, strict: bool) -> None:
    try:
        if _is_module(obj):
            obj.load_state_dict(state, strict=strict)
        else:
            obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"load_state_dict failed: {e}", where=what) from e


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _shape(x: Any) -> str:
    if isinstance(x, (list, tuple)):
        return f"a list of {len(x)}"
    if isinstance(x, Mapping) and not hasattr(x, "state_dict"):
        if x and all(isinstance(v, Mapping) or hasattr(v, "state_dict") for v in x.values()):
            return f"a dict with keys {sorted(map(str, x))}"
    return "a single object"


# --------------------------------------------------------------------------- global RNG streams


def capture_rng() -> dict[str, Any]:
    """Python, numpy-global, torch CPU and (when in use) CUDA generator states."""
    state: dict[str, Any] = {"python": _python_state_tree(random.getstate()), "numpy": np.random.get_state()}
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
    return state


# What random/numpy/torch raise for a state of the wrong shape, type or range (an out-of-range
# integer is an OverflowError): each becomes a CheckpointError naming the section, so restore falls back.
_STATE_ERRORS = (TypeError, ValueError, OverflowError, RuntimeError, IndexError, AttributeError, KeyError)


def apply_rng(state: Mapping[str, Any]) -> None:
    """Put the global RNG streams back exactly where they were at save time."""
    try:
        if "python" in state:
            random.setstate(_python_state(state["python"]))
        if "numpy" in state:
            np.random.set_state(state["numpy"])
        if "torch" in state or "cuda" in state:
            _apply_torch_rng(state)
    except _STATE_ERRORS as e:
        raise CheckpointError(f"cannot restore the random number generators: {e}", where="rng") from e


def _python_state_tree(state: tuple[Any, ...]) -> tuple[Any, ...]:
    """``random.getstate()`` with its 625 words as one uint32 array instead of 625 JSON numbers."""
    version, internal, gauss = state
    if all(0 <= w < 2**32 for w in internal):
        internal = np.array(internal, dtype=np.uint32)
    return (version, internal, gauss)


def _python_state(saved: Any) -> tuple[Any, ...]:
    """The tuple ``random.setstate`` takes, checked: it would silently truncate words past 32 bits."""
    version, internal, gauss = saved
    words = internal.tolist() if isinstance(internal, np.ndarray) else internal
    words = tuple(words)
    if not all(type(w) is int and 0 <= w < 2**32 for w in words):
        raise ValueError("the Mersenne Twister words must be integers in [0, 2**32)")
    return (version, words, gauss)


def _apply_torch_rng(state: Mapping[str, Any]) -> None:
    import torch

    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if not cuda:
        return
    if not torch.cuda.is_available():
        warnings.warn("the checkpoint holds CUDA RNG states but CUDA is not available; skipped them", stacklevel=5)
        return
    count = torch.cuda.device_count()
    if count != len(cuda):
        warnings.warn(
            f"the checkpoint holds RNG states for {len(cuda)} CUDA devices, this machine has {count}; "
            f"restored the first {min(count, len(cuda))}",
            stacklevel=5,
        )
    for i, s in enumerate(cuda[:count]):
        torch.cuda.set_rng_state(s.cpu(), i)


# --------------------------------------------------------------------------- user generators

class _GeneratorKind(NamedTuple):
    """How to recognise one kind of generator, read its state and set it back."""

    test: Callable[[Any], bool]
    get: Callable[[Any], Any]
    set: Callable[[Any, Any], None]


def _is_torch_generator(g: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(g, torch.Generator)


def _set_torch_generator(g: Any, s: Any) -> None:
    g.set_state(s.cpu())


def _set_bit_generator(g: np.random.Generator, s: Any) -> None:
    g.bit_generator.state = s


def _set_python_random(g: random.Random, s: Any) -> None:
    g.setstate(_python_state(s))


# The closed table of generator kinds; the saved "kind" must name a row here.
_GENERATOR_KINDS: Mapping[str, _GeneratorKind] = MappingProxyType({
    "torch.Generator": _GeneratorKind(_is_torch_generator, lambda g: g.get_state(), _set_torch_generator),
    "numpy.random.Generator": _GeneratorKind(
        lambda g: isinstance(g, np.random.Generator), lambda g: g.bit_generator.state, _set_bit_generator
    ),
    "numpy.random.RandomState": _GeneratorKind(
        lambda g: isinstance(g, np.random.RandomState), lambda g: g.get_state(), lambda g, s: g.set_state(s)
    ),
    "random.Random": _GeneratorKind(
        lambda g: isinstance(g, random.Random), lambda g: _python_state_tree(g.getstate()), _set_python_random
    ),
})


def _kind_of(g: Any, where: str) -> str:
    for kind, row in _GENERATOR_KINDS.items():
        if row.test(g):
            return kind
    raise TypeError(
        f"generators[{where!r}]: cannot checkpoint a {type(g).__name__!r}; supported: "
        + ", ".join(_GENERATOR_KINDS)
    )


def capture_generators(generators: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: {"kind": ..., "state": ...}}`` for generators the user passed by name."""
    out = {}
    for name, g in generators.items():
        kind = _kind_of(g, _key(name, "generators"))
        out[name] = {"kind": kind, "state": _GENERATOR_KINDS[kind].get(g)}
    return out


def apply_generators(generators: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """Restore each named generator; a name or kind the checkpoint lacks is an error."""
    if not isinstance(saved, Mapping):
        raise CheckpointError(f"the saved generators are {type(saved).__name__}, not a mapping", where="generators")
    for name, g in generators.items():
        kind, where = _kind_of(g, name), f"generators[{name!r}]"
        entry = saved.get(name)
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"no generator {name!r} in the checkpoint; it has {sorted(saved)}", where="generators")
        if entry.get("kind") != kind:
            raise CheckpointError(f"saved as a {entry.get('kind')}, restoring into a {kind}", where=where)
        try:
            _GENERATOR_KINDS[kind].set(g, entry["state"])
        except _STATE_ERRORS as e:
            raise CheckpointError(f"cannot restore the generator state: {e}", where=where) from e
