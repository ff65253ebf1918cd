"""The checks that run once over many names (split index, tree decode) agree with the one-at-a-time rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelpack import manifest, tree
from modelpack.errors import FormatError

_CHARS = st.sampled_from(list("aZ09_.-$/\n ") + ["é"])
_NAMES = st.lists(st.text(_CHARS, max_size=8), max_size=6)


@given(_NAMES)
def test_all_valid_names_is_valid_name_of_each(names):
    assert tree.all_valid_names(names) == all(tree.valid_name(n) for n in names)


@pytest.mark.parametrize("names, ok", [
    ([], True),
    (["a", "b.c", "d-e_f"], True),
    (["a\nb"], False),  # joined, it would read as two valid names
    (["a", "b."], False),
    (["a..b"], False),
    (["a", ""], False),
    (["a", 7], False),
    (["x" * 512], True),
    (["x" * 513], False),
])
def test_all_valid_names_cases(names, ok):
    assert tree.all_valid_names(names) is ok


def _refs(node):
    seen: list[str] = []
    return tree.decode(node, lambda n: seen.append(n) or f"<{n}>"), seen


def test_a_state_dict_decodes_in_one_pass_with_every_reference_checked():
    node = {"a.w": {"$tensor": "a.w"}, "b.w": {"$tensor": "b.w"}}
    assert _refs(node) == ({"a.w": "<a.w>", "b.w": "<b.w>"}, ["a.w", "b.w"])


@pytest.mark.parametrize("node, words", [
    ({"a": {"$tensor": "a"}, "b": {"$tensor": 3}}, "must name a tensor"),
    ({"a": {"$tensor": "a"}, "b": {"$tensor": "b", "x": 1}}, "unknown tagged object"),
    ({"a": {"$tensor": "a"}, "$b": {"$tensor": "b"}}, "unknown tagged object"),
])
def test_a_bad_reference_among_good_ones_is_refused(node, words):
    with pytest.raises(FormatError, match=words):
        tree.decode(node, str)


def test_a_key_holding_newline_dollar_is_a_plain_key():
    node = {"a\n$b": {"$tensor": "t"}, "c": [1, {"$tensor": "u"}]}
    assert _refs(node) == ({"a\n$b": "<t>", "c": [1, "<u>"]}, ["t", "u"])


def test_mixed_values_keep_their_order_and_types():
    node = {"n": 1, "t": {"$tensor": "t"}, "f": {"$float": "inf"}, "l": [None]}
    assert _refs(node) == ({"n": 1, "t": "<t>", "f": float("inf"), "l": [None]}, ["t"])


@pytest.mark.parametrize("node, tensors, words", [
    ({"a": {"$tensor": "a"}, "b": {"$tensor": "zz"}, "c": {"$tensor": "yy"}}, {"a"}, "unknown tensor 'zz'"),
    ({"a": {"$tensor": "a"}}, {"a", "c", "b"}, "'b' is not used by the tree"),
])
def test_check_tree_names_the_first_problem(node, tensors, words):
    with pytest.raises(FormatError, match=words):
        manifest.check_tree(node, tensors)
    with pytest.raises(FormatError, match=words):
        manifest.check_tree(node, dict.fromkeys(tensors))
