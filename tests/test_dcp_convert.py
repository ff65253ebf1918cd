"""``modelpack convert DCP_DIR out.mpk`` and ``modelpack verify DIR``: one file out, streaming, no process group."""

from __future__ import annotations

import io
import warnings

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import modelpack  # noqa: E402
from modelpack.cli import main  # noqa: E402
from modelpack.dcp import MpkStorageReader, MpkStorageWriter, consolidate  # noqa: E402

from conftest import bits_equal, run_python  # noqa: E402


def _single(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _cli(*argv):
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def _state():
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16)},
        "optim": {"state": {0: {"step": torch.tensor(2.0), "exp_avg": torch.randn(4, 3, generator=g)}},
                  "param_groups": [{"lr": 0.1, "params": ["model.w", "model.b"]}]},
        "layers": [torch.ones(2), torch.zeros(3, dtype=torch.int64)],
        "step": 7,
        "$odd": {"x": 1},
    }


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "ckpt"
    _single(dcp.save, _state(), storage_writer=MpkStorageWriter(path))
    return path


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return bits_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_cli_convert_gives_back_the_nested_state(folder, tmp_path):
    out = tmp_path / "one.mpk"
    code, text = _cli("convert", str(folder), str(out))
    assert code == 0 and "one.mpk" in text
    got = modelpack.load(out)
    expected = _state()
    expected["optim"]["state"] = {"0": expected["optim"]["state"][0]}  # DCP keys are strings
    assert _same(got, expected), got


def test_single_file_reader_loads_the_converted_file(folder, tmp_path):
    out = tmp_path / "one.mpk"
    consolidate(folder, out)
    target = {"model": {"w": torch.zeros(4, 3), "b": torch.zeros(3, dtype=torch.bfloat16)}, "step": 0}
    _single(dcp.load, target, storage_reader=MpkStorageReader(out))
    assert target["step"] == 7 and bits_equal(target["model"]["b"], _state()["model"]["b"])


def test_single_file_reader_on_a_plain_save(tmp_path):
    modelpack.save({"w": torch.arange(6.0).reshape(2, 3), "n": 4}, tmp_path / "p.mpk")
    target = {"w": torch.zeros(2, 3), "n": 0}
    _single(dcp.load, target, storage_reader=MpkStorageReader(tmp_path / "p.mpk"))
    assert target["n"] == 4 and torch.equal(target["w"], torch.arange(6.0).reshape(2, 3))


def test_cli_convert_refuses_what_is_not_a_checkpoint_folder(tmp_path, capsys):
    code, _ = _cli("convert", str(tmp_path), str(tmp_path / "o.mpk"))
    assert code == 1 and "distributed checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "o.mpk").exists()


def test_cli_verify_a_folder(folder, capsys):
    code, text = _cli("verify", str(folder))
    assert code == 0 and text == f"{folder}: OK\n"
    shard = next(folder.glob("shard-*.mpk"))
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, text = _cli("verify", str(folder))
    assert code == 1 and "FAILED" in text


PEAK = """
import resource, sys, torch
import modelpack.dcp
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
modelpack.dcp.consolidate(sys.argv[1], sys.argv[2])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
def test_consolidation_streams_one_tensor_at_a_time(tmp_path):
    n, mib = 8, 16
    state = {f"t{i}": torch.full((mib << 18,), float(i)) for i in range(n)}  # 8 x 16 MiB
    _single(dcp.save, state, storage_writer=MpkStorageWriter(tmp_path / "big"))
    del state
    r = run_python(PEAK, str(tmp_path / "big"), str(tmp_path / "big.mpk"), timeout=300)
    assert r.returncode == 0, r.stderr
    grew = int(r.stdout.split()[-1])
    assert grew < 4 * mib, f"peak memory grew by {grew} MiB for {n} tensors of {mib} MiB"
    with modelpack.open(tmp_path / "big.mpk") as pack:
        assert float(pack["t5"][-1]) == 5.0 and len(pack) == n


def _expected():
    expected = _state()
    expected["optim"]["state"] = {"0": expected["optim"]["state"][0]}  # DCP keys are strings
    return expected


def test_cli_convert_to_a_split_pack(folder, tmp_path):
    out = tmp_path / "split" / "one.mpk"
    out.parent.mkdir()
    code, _ = _cli("convert", str(folder), str(out), "--max-shard-size", "40B")
    assert code == 0
    shards = sorted(p.name for p in out.parent.glob("one-*-of-*.mpk"))
    assert len(shards) > 1, shards
    assert _same(modelpack.load(out), _expected())
    code, text = _cli("verify", str(out))
    assert code == 0 and "OK" in text


def test_max_shard_size_is_for_checkpoint_folders_only(tmp_path, capsys):
    modelpack.save({"w": torch.ones(2)}, tmp_path / "p.mpk")
    code, _ = _cli("convert", str(tmp_path / "p.mpk"), str(tmp_path / "p.safetensors"), "--max-shard-size", "1MB")
    assert code == 1 and "--max-shard-size" in capsys.readouterr().err
    assert not (tmp_path / "p.safetensors").exists()


def test_converted_file_carries_the_chunks_checksums(folder, tmp_path):
    """Tensor bytes are copied, never read: their CRC-32 comes from the shards', so damage stays detectable."""
    clean = tmp_path / "clean.mpk"
    consolidate(folder, clean)
    with modelpack.open(clean) as pack:
        pack.verify()
    (shard,) = folder.glob("shard-*.mpk")  # one process: one shard
    with modelpack.open(shard) as pack:
        entry = next(e for e in pack.entries.values() if e["shape"] == [4, 3] and e["dtype"] == "float32")
    data = bytearray(shard.read_bytes())
    data[entry["offset"] + 5] ^= 0x10
    shard.write_bytes(bytes(data))
    damaged = tmp_path / "damaged.mpk"
    consolidate(folder, damaged)
    code, text = _cli("verify", str(damaged))
    assert code == 1 and "FAILED" in text


@pytest.mark.parametrize(("offsets", "sizes", "start"), [
    ((3, 0), (3, 5), 15),  # rows: one run
    ((0, 2), (9, 3), None),  # columns: strided
    ((2, 1, 0), (1, 2, 4), 2 * 12 + 4),  # one row block of a 3-d tensor, whole in the last dimension
    ((2, 1, 1), (1, 2, 3), None),  # not whole in the last dimension
    ((1, 2, 0), (1, 1, 4), 12 + 8),  # one row of the last dimension
    ((0, 0), (9, 5), 0),  # the whole tensor
])
def test_which_chunks_are_copied_as_one_run(offsets, sizes, start):
    from modelpack.dcp._convert import _run_start
    from modelpack.dcp._layout import Chunk

    size = (9, 5) if len(offsets) == 2 else (3, 3, 4)
    assert _run_start(Chunk(offsets, sizes, 0, 0), size) == start


def test_crc32_arithmetic_matches_zlib():
    import os
    import zlib

    from modelpack._crc import crc32_combine, crc32_tail

    for la, lb in [(0, 0), (0, 7), (7, 0), (1, 1), (64, 4096), (13, 100_003)]:
        a, b = os.urandom(la), os.urandom(lb)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), lb) == zlib.crc32(a + b)
        assert crc32_tail(zlib.crc32(a + b), zlib.crc32(a), lb) == zlib.crc32(b)


def _refuse(*args):
    import errno

    raise OSError(errno.EXDEV, "cross-device")


def _big_state():
    return {"big": torch.arange(400_000, dtype=torch.float32), "small": torch.ones(3)}  # 1.6 MB: a kernel copy


@pytest.fixture
def big_folder(tmp_path):
    path = tmp_path / "big"
    _single(dcp.save, _big_state(), storage_writer=MpkStorageWriter(path))
    return path


@pytest.mark.parametrize("kernel_copy", [_refuse, lambda *args: 0, None], ids=["refused", "copies-nothing", "absent"])
def test_copy_falls_back_where_the_kernel_refuses(big_folder, tmp_path, monkeypatch, kernel_copy):
    import os

    calls = []
    consolidate(big_folder, tmp_path / "kernel.mpk")

    if kernel_copy is None:  # not Linux
        monkeypatch.delattr(os, "copy_file_range")
    else:
        monkeypatch.setattr(os, "copy_file_range", lambda *args: calls.append(args) or kernel_copy(*args))
    out = tmp_path / "one.mpk"
    consolidate(big_folder, out)
    assert calls or kernel_copy is None
    assert _same(modelpack.load(out), _big_state())
    with modelpack.open(out) as pack:
        pack.verify()
    assert out.read_bytes() == (tmp_path / "kernel.mpk").read_bytes()


@pytest.mark.parametrize("source", ["folder", "big_folder"], ids=["read", "kernel-copied"])
def test_a_shard_truncated_while_open_aborts_the_copy(source, request, tmp_path, monkeypatch):
    import os

    folder = request.getfixturevalue(source)

    from modelpack.dcp import _convert

    opened = _convert._layout.check_shards

    def open_then_truncate(root, doc):
        packs = opened(root, doc)
        for name in doc.shards:
            os.truncate(root / name, 100)
        return packs

    monkeypatch.setattr(_convert._layout, "check_shards", open_then_truncate)
    with pytest.raises(modelpack.FormatError, match=r"shard-\w+-0\.mpk: the file ends early"):
        consolidate(folder, tmp_path / "one.mpk")
    assert not (tmp_path / "one.mpk").exists()


def test_cli_inspect_a_folder(folder):
    code, text = _cli("inspect", str(folder))
    assert code == 0 and "distributed checkpoint, 1 shards" in text
    assert "model.w" in text and "[4, 3]" in text and "non-tensor values" in text
    code, text = _cli("inspect", "--json", str(folder))
    import json

    info = json.loads(text)
    assert len(info["shards"]) == 1 and info["tensor_count"] == 6
    w = next(t for t in info["tensors"] if t["name"] == "model.w")
    assert w == {"name": "model.w", "dtype": "float32", "shape": [4, 3], "chunks": 1, "shards": 1, "numel": 12,
                 "nbytes": 48}


@pytest.mark.parametrize("source", ["folder", "big_folder"], ids=["read", "kernel-copied"])
def test_copied_and_assembled_outputs_are_the_same_bytes(source, request, tmp_path, monkeypatch):
    from modelpack.dcp import _convert

    folder = request.getfixturevalue(source)

    consolidate(folder, tmp_path / "copied.mpk")
    monkeypatch.setattr(_convert, "_copied", lambda t, packs: None)  # every tensor through memory
    consolidate(folder, tmp_path / "assembled.mpk")
    assert (tmp_path / "copied.mpk").read_bytes() == (tmp_path / "assembled.mpk").read_bytes()


def test_cli_convert_refuses_a_bad_shard_size(folder, tmp_path, capsys):
    code, _ = _cli("convert", str(folder), str(tmp_path / "o.mpk"), "--max-shard-size", "lots")
    assert code == 1 and "is not a size such as" in capsys.readouterr().err
    assert not (tmp_path / "o.mpk").exists()
