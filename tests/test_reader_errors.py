"""Files that are not (intact) .mpk files get one clear ModelPackError."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import modelpack
from modelpack.errors import FormatError, IntegrityError, NotAModelPackError


def _pack(tmp_path):
    path = tmp_path / "good.mpk"
    modelpack.save({"alpha": np.arange(1000, dtype=np.float32), "beta": np.ones(50, np.int64)}, path)
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b""), "looks like an empty file"),
        (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "a Python pickle"),
        (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00" + b"x" * 100), "a .npy file"),
        (lambda p: p.write_bytes(b"GGUF" + b"\0" * 100), "a GGUF file"),
        (lambda p: p.write_bytes(b"just some text, long enough to be a file"), "something else"),
    ],
)
def test_not_a_modelpack_file(tmp_path, make, words):
    path = tmp_path / "f.mpk"
    make(path)
    with pytest.raises(NotAModelPackError, match=words):
        modelpack.load(path)


def test_torch_save_file_is_named(tmp_path, torch):
    torch.save({"a": torch.zeros(2)}, tmp_path / "t.pt")
    with pytest.raises(NotAModelPackError, match="torch.save file"):
        modelpack.load(tmp_path / "t.pt")


def test_safetensors_file_is_named(tmp_path, torch):
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"a": torch.zeros(2)}, tmp_path / "a.safetensors")
    with pytest.raises(NotAModelPackError, match="safetensors file"):
        modelpack.load(tmp_path / "a.safetensors")


def test_folder_is_named(tmp_path):
    with pytest.raises(NotAModelPackError, match="it is a folder"):
        modelpack.load(tmp_path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        modelpack.load(tmp_path / "nope.mpk")


def test_every_truncation_is_a_format_error(tmp_path):
    data = _pack(tmp_path).read_bytes()
    cut = tmp_path / "cut.mpk"
    for n in sorted({0, 1, 4, 30, 64, len(data) // 2, len(data) - 23, len(data) - 22, len(data) - 1} | set(range(0, len(data), 509))):
        cut.write_bytes(data[:n])
        with pytest.raises(FormatError):
            modelpack.load(cut)


def test_trailing_and_prepended_bytes_are_refused(tmp_path):
    data = _pack(tmp_path).read_bytes()
    (tmp_path / "trail.mpk").write_bytes(data + b"junk")
    (tmp_path / "pre.mpk").write_bytes(b"#!/bin/sh\n" + data)
    with pytest.raises(FormatError, match="appended after the archive"):
        modelpack.load(tmp_path / "trail.mpk")
    with pytest.raises(FormatError):
        modelpack.load(tmp_path / "pre.mpk")


def test_bit_flip_in_tensor_data_names_the_tensor(tmp_path):
    path = _pack(tmp_path)
    with modelpack.open(path) as pack:
        offset = pack.entries["beta"]["offset"] + 17
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))
    modelpack.load(path)  # structure is intact: without verify the flip goes unnoticed
    with pytest.raises(IntegrityError, match="tensor 'beta': checksum mismatch"):
        modelpack.verify(path)
    with pytest.raises(IntegrityError, match="'beta'"):
        modelpack.load(path, verify=True)


def test_bit_flip_in_manifest_is_caught_on_open(tmp_path):
    path = _pack(tmp_path)
    data = bytearray(path.read_bytes())
    pos = data.rindex(b'"format"')
    data[pos + 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="member 'manifest.json'"):
        modelpack.open(path)


def test_future_format_version_is_refused(tmp_path):
    from modelpack import manifest

    body = manifest.dumps({"format": "modelpack", "version": 99, "metadata": {}, "tensors": [], "tree": None})
    import zipfile

    with zipfile.ZipFile(tmp_path / "f.mpk", "w") as zf:
        zf.writestr("manifest.json", body)
    with pytest.raises(FormatError, match="newer modelpack .format version 99.; this reader supports version 1"):
        modelpack.load(tmp_path / "f.mpk")
