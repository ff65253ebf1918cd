"""What a node, input, block or parameter name may be, and why.

A layer node's name is its state_dict prefix and each dotted part becomes a
submodule attribute when the spec is built, so a part must not replace an
nn.Module attribute (``forward``, ``training``, ``state_dict``...) or be a
dunder. Input and parameter names are Python identifiers.
"""

from __future__ import annotations

import keyword
import re

from .. import limits

__all__ = ["NAME_PATTERN", "IDENT_PATTERN", "MODULE_ATTRIBUTES", "name_problem", "identifier_problem"]

_PART = r"(?:[A-Za-z_][A-Za-z0-9_-]*|[0-9]+)"
# `layer1.0.conv1`: identifiers or Sequential-style indices, joined by dots. A hyphen may follow the
# first character (torchvision's RegNet names its blocks `block1-0`; torch module names allow it).
NAME_PATTERN = rf"^{_PART}(?:\.{_PART})*$"
IDENT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NAME = re.compile(NAME_PATTERN)
_IDENT = re.compile(IDENT_PATTERN)

# dir(torch.nn.Module) plus a fresh module's instance attributes, dunders left out
# (they are refused by rule). tests/test_spec_validate.py checks this against torch.
MODULE_ATTRIBUTES = frozenset("""
T_destination _apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl
_forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
_forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
_is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks _load_state_dict_pre_hooks
_maybe_warn_non_full_backward_hook _modules _named_members _non_persistent_buffers_set _parameters
_register_load_state_dict_pre_hook _register_state_dict_hook _replicate_for_data_parallel
_save_to_state_dict _slow_forward _state_dict_hooks _state_dict_pre_hooks _version _wrapped_call_impl
add_module apply bfloat16 buffers call_super_init children compile cpu cuda double dump_patches eval
extra_repr float forward get_buffer get_extra_state get_parameter get_submodule half ipu
load_state_dict modules mtia named_buffers named_children named_modules named_parameters parameters
register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to
to_empty train training type xpu zero_grad
""".split())


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a node (None when it can)."""
    cap = limits.current().max_name_length
    if len(name) > cap:
        return f"name is {len(name)} characters long, more than max_name_length={cap}"
    if not _NAME.match(name):
        return (f"{name!r} is not a valid node name: use identifiers or indices joined by dots, "
                "like 'layer1.0.conv1'")
    for part in name.split("."):
        if part.startswith("__") and part.endswith("__"):
            return f"{name!r}: the part {part!r} is a dunder name, which is reserved"
        if part in MODULE_ATTRIBUTES:
            return f"{name!r}: the part {part!r} would replace the nn.Module attribute {part!r}; rename it"
    return None


def identifier_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name an input / block / parameter (None when it can)."""
    if not _IDENT.match(name):
        return f"{what} name {name!r} is not an identifier (letters, digits, underscores)"
    if keyword.iskeyword(name) or name == "self":
        return f"{what} name {name!r} is a Python keyword; rename it"
    return None
