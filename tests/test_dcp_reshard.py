"""Distributed checkpoints on real gloo process groups: save on one world size, load bit-exact on another.

Model + Adam through FSDP2 (``fully_shard`` on CPU) and ``get_state_dict``/``set_state_dict``:
4 -> 2, 4 -> 1 and 2 -> 4. Row- and column-sharded DTensors with plain values, and ``async_save``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from helpers.dcp_group import run_group  # noqa: E402
from helpers.dcp_work import load_dtensor, load_fsdp, save_dtensor, save_fsdp  # noqa: E402

import modelpack.dcp  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saved_on_4(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp4")
    run_group(4, save_fsdp, str(root / "ckpt"), str(root / "ref.mpk"))
    return root


@pytest.mark.parametrize("world", [2, 1])
def test_fsdp_model_and_adam_4_to_fewer(saved_on_4, world):
    assert len(list((saved_on_4 / "ckpt").glob("shard-*.mpk"))) == 4
    run_group(world, load_fsdp, str(saved_on_4 / "ckpt"), str(saved_on_4 / "ref.mpk"))


def test_fsdp_model_and_adam_2_to_4(tmp_path):
    run_group(2, save_fsdp, str(tmp_path / "ckpt"), str(tmp_path / "ref.mpk"))
    run_group(4, load_fsdp, str(tmp_path / "ckpt"), str(tmp_path / "ref.mpk"))


def test_whole_folder_verifies(saved_on_4):
    lines = modelpack.dcp.verify(saved_on_4 / "ckpt")
    assert len(lines) == 5 and all("OK" in line for line in lines[1:])


@pytest.mark.parametrize("use_async", [False, True], ids=["save", "async_save"])
def test_dtensor_rows_and_columns_4_to_2(tmp_path, use_async):
    run_group(4, save_dtensor, str(tmp_path / "ckpt"), 3, use_async)
    run_group(2, load_dtensor, str(tmp_path / "ckpt"), 3)


def test_convert_to_one_file_then_load_without_a_group(saved_on_4, tmp_path):
    from helpers.dcp_work import assert_same

    out = tmp_path / "one.mpk"
    modelpack.dcp.consolidate(saved_on_4 / "ckpt", out)
    got = modelpack.load(out)
    ref = modelpack.load(saved_on_4 / "ref.mpk")
    assert got["step"] == 1 and got["note"] == "world 4"
    assert_same({"model": got["model"], "optim": got["optim"]}, ref)


def test_single_file_loads_on_any_world_size(saved_on_4, tmp_path):
    out = tmp_path / "one.mpk"
    modelpack.dcp.consolidate(saved_on_4 / "ckpt", out)
    run_group(2, load_fsdp, str(out), str(saved_on_4 / "ref.mpk"))


def test_rows_and_columns_consolidate_bit_exact(tmp_path):
    """Row chunks (uneven, one empty) are copied file to file; column chunks are assembled; both bit-exact."""
    from helpers.dcp_work import assert_same, plain_state

    run_group(4, save_dtensor, str(tmp_path / "ckpt"), 5)
    expected = plain_state(5)
    one = tmp_path / "one.mpk"
    modelpack.dcp.consolidate(tmp_path / "ckpt", one)
    with modelpack.open(one) as pack:
        pack.verify()
    assert_same(modelpack.load(one), expected)
    split = tmp_path / "split" / "one.mpk"
    split.parent.mkdir()
    modelpack.dcp.consolidate(tmp_path / "ckpt", split, max_shard_size=64)
    assert len(list(split.parent.glob("one-*-of-*.mpk"))) > 1
    with modelpack.open(split) as pack:
        pack.verify()
    assert_same(modelpack.load(split), expected)
