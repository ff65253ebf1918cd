"""Content digests (``modelpack digest``) and model-signing signatures (``modelpack sign`` / ``verify``)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

import modelpack
from modelpack import api, tree
from modelpack.cli import main
from modelpack.errors import IntegrityError

SPEC = """modelpack: 1
name: tiny
inputs:
  x: {shape: [batch, 3], dtype: float32}
nodes:
  - {name: fc, layer: Linear, args: {in_features: 3, out_features: 2}}
outputs: [fc]
"""


def _weights():
    return {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.ones(2, dtype=np.float32)}


def _write(path, weights=None, *, spec=SPEC, order=None, sha256=False):
    weights = dict(weights or _weights())
    if order:
        weights = {k: weights[k] for k in order}
    tree_json, leaves = tree.encode(weights)
    api.write_pack(path, tree_json, leaves, spec_text=spec, sha256=sha256)


def test_digest_ignores_member_order_and_sha_records(tmp_path):
    _write(tmp_path / "a.mpk")
    _write(tmp_path / "b.mpk", order=["fc.bias", "fc.weight"], sha256=True)
    assert (tmp_path / "a.mpk").read_bytes() != (tmp_path / "b.mpk").read_bytes()
    # the tree (dict order) is content, so the same order is needed for the same digest
    _write(tmp_path / "c.mpk", sha256=True)
    assert modelpack.digest(tmp_path / "a.mpk") == modelpack.digest(tmp_path / "c.mpk")
    assert modelpack.digest(tmp_path / "a.mpk").startswith("sha256:")
    w = _weights()
    w["fc.bias"] = w["fc.bias"] + 1
    _write(tmp_path / "d.mpk", w)
    assert modelpack.digest(tmp_path / "d.mpk") != modelpack.digest(tmp_path / "a.mpk")


def test_digest_cli(tmp_path, capsys):
    _write(tmp_path / "a.mpk")
    assert main(["digest", "--parts", str(tmp_path / "a.mpk")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{modelpack.digest(tmp_path / 'a.mpk')}  {tmp_path / 'a.mpk'}"
    assert [line.split()[1] for line in out[1:]] == ["spec.yaml", "structure.json", "tensors/fc.bias",
                                                     "tensors/fc.weight"]
    (tmp_path / "bad.mpk").write_bytes(b"nope")
    assert main(["digest", str(tmp_path / "bad.mpk")]) == 1
    assert "FAILED: not a .mpk file" in capsys.readouterr().out


# --------------------------------------------------------------------------- signatures


@pytest.fixture
def keys(tmp_path):
    pytest.importorskip("model_signing", reason="model-signing is not installed (pip install 'modelpack[sign]')")
    pytest.importorskip("OpenSSL", reason="pyOpenSSL is not installed (pip install 'modelpack[sign]')")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pair(name):
        k = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / f"{name}.pem").write_bytes(k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (tmp_path / f"{name}.pub").write_bytes(k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"

    return pair("alice"), pair("mallory")


def _statement(sig_path):
    bundle = json.loads(sig_path.read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def test_sign_and_verify_round_trip(tmp_path, keys):
    from modelpack.sign import sign, verify_signature

    (key, pub), _ = keys
    _write(tmp_path / "m.mpk")
    sig = sign(tmp_path / "m.mpk", key)
    assert sig == tmp_path / "m.mpk.sig"
    statement = _statement(sig)
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    digest = modelpack.digest(tmp_path / "m.mpk")
    assert "sha256:" + statement["subject"][0]["digest"]["sha256"] == digest  # the signature covers the digest
    assert verify_signature(tmp_path / "m.mpk", sig, pub) == digest
    # re-saving in another member order with SHA-256 records: same content, no re-signing
    _write(tmp_path / "m.mpk", order=["fc.bias", "fc.weight"], sha256=True)
    # the tree's dict order changed, which is content: that is reported
    with pytest.raises(IntegrityError, match="the structure .* changed"):
        verify_signature(tmp_path / "m.mpk", sig, pub)
    _write(tmp_path / "m.mpk", sha256=True)
    assert verify_signature(tmp_path / "m.mpk", sig, pub) == digest


@pytest.mark.parametrize("change, words", [
    ("tensor", "tensor 'fc.bias' changed"),
    ("spec", r"the spec \(spec.yaml\) changed"),
    ("metadata", "the structure"),
    ("extra", "tensor 'extra' was not signed"),
])
def test_tampering_is_named(tmp_path, keys, change, words):
    from modelpack.sign import sign, verify_signature

    (key, pub), _ = keys
    _write(tmp_path / "m.mpk")
    sig = sign(tmp_path / "m.mpk", key)
    w = _weights()
    spec = SPEC
    if change == "tensor":
        w["fc.bias"] = w["fc.bias"].copy()
        w["fc.bias"][0] = np.nextafter(np.float32(1), np.float32(2))
    elif change == "spec":
        spec = SPEC.replace("tiny", "tiny2")
    elif change == "extra":
        w["extra"] = np.zeros(1, dtype=np.float32)
    if change == "metadata":
        tree_json, leaves = tree.encode(w)
        api.write_pack(tmp_path / "m.mpk", tree_json, leaves, spec_text=spec, metadata={"license": "evil"})
    else:
        _write(tmp_path / "m.mpk", w, spec=spec)
    with pytest.raises(IntegrityError, match=words):
        verify_signature(tmp_path / "m.mpk", sig, pub)


def test_swapped_tensors_are_both_named(tmp_path, keys):
    """Two members of one shape and dtype trade places: every CRC-32 still holds, the signature does not."""
    from modelpack.sign import sign, verify_signature

    (key, pub), _ = keys
    a, b = np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    _write(tmp_path / "m.mpk", {"a": a, "b": b}, spec=None)
    sig = sign(tmp_path / "m.mpk", key)
    _write(tmp_path / "m.mpk", {"a": b, "b": a}, spec=None)
    modelpack.verify(tmp_path / "m.mpk")  # a well-formed pack
    with pytest.raises(IntegrityError, match="tensor 'a' changed; tensor 'b' changed"):
        verify_signature(tmp_path / "m.mpk", sig, pub)


def test_wrong_key_and_forged_bundle_fail(tmp_path, keys):
    from modelpack.sign import sign, verify_signature

    (key, pub), (other_key, other_pub) = keys
    _write(tmp_path / "m.mpk")
    sig = sign(tmp_path / "m.mpk", key)
    with pytest.raises(IntegrityError, match="does not verify with this public key"):
        verify_signature(tmp_path / "m.mpk", sig, other_pub)
    bundle = json.loads(sig.read_text())
    statement = _statement(sig)
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(IntegrityError, match="does not verify with this public key"):
        verify_signature(tmp_path / "m.mpk", sig, pub)


def test_a_file_signature_made_by_model_signing_verifies(tmp_path, keys):
    import model_signing

    from modelpack.sign import verify_signature

    (key, pub), _ = keys
    _write(tmp_path / "m.mpk")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key).sign(tmp_path / "m.mpk", tmp_path / "f.sig")
    assert verify_signature(tmp_path / "m.mpk", tmp_path / "f.sig", pub) == modelpack.digest(tmp_path / "m.mpk")
    _write(tmp_path / "m.mpk", order=["fc.bias", "fc.weight"])
    with pytest.raises(IntegrityError, match="the file differs from what was signed"):
        verify_signature(tmp_path / "m.mpk", tmp_path / "f.sig", pub)


def test_our_signature_verifies_with_model_signing_alone(tmp_path, keys):
    """Other tools read our bundle: model-signing's own verifier checks it and returns the signed parts."""
    from pathlib import Path

    from model_signing._signing import sign_ec_key, sign_sigstore_pb

    from modelpack.sign import sign

    (key, pub), _ = keys
    _write(tmp_path / "m.mpk")
    sig = sign(tmp_path / "m.mpk", key)
    signed = sign_ec_key.Verifier(Path(pub)).verify(sign_sigstore_pb.Signature.read(sig))
    names = [rd.identifier for rd in signed.resource_descriptors()]
    assert names == ["spec.yaml", "structure.json", "tensors/fc.bias", "tensors/fc.weight"]


def test_cli_sign_and_verify(tmp_path, keys, capsys):
    (key, pub), (_, other_pub) = keys
    _write(tmp_path / "m.mpk")
    assert main(["sign", str(tmp_path / "m.mpk"), "--key", str(key), "-o", str(tmp_path / "s.sig")]) == 0
    assert main(["verify", str(tmp_path / "m.mpk"), "--signature", str(tmp_path / "s.sig"),
                 "--public-key", str(pub)]) == 0
    assert "signature OK (sha256:" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "m.mpk"), "--signature", str(tmp_path / "s.sig"),
                 "--public-key", str(other_pub)]) == 1
    assert "does not verify with this public key" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "m.mpk"), "--signature", str(tmp_path / "s.sig")]) == 2


# --------------------------------------------------------------------------- split packs


def _layers(seed):
    rng = np.random.default_rng(seed)
    return {f"layer{i}.weight": rng.standard_normal(1000).astype(np.float32) for i in range(6)}


def test_digest_is_stable_across_split_and_unsplit(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    modelpack.save(_layers(0), tmp_path / "a" / "m.mpk")
    modelpack.save(_layers(0), tmp_path / "b" / "m.mpk", max_shard_size=9000, sha256=True)
    assert len(list((tmp_path / "b").iterdir())) > 2  # really split
    assert modelpack.digest(tmp_path / "a" / "m.mpk") == modelpack.digest(tmp_path / "b" / "m.mpk")


def test_re_splitting_needs_no_new_signature_and_a_swapped_shard_is_named(tmp_path, keys):
    import shutil

    from modelpack.sign import sign, verify_signature

    (key, pub), _ = keys
    for d in ("one", "split", "other"):
        (tmp_path / d).mkdir()
    modelpack.save(_layers(0), tmp_path / "one" / "m.mpk")
    sig = sign(tmp_path / "one" / "m.mpk", key)
    modelpack.save(_layers(0), tmp_path / "split" / "m.mpk", max_shard_size=9000)
    assert verify_signature(tmp_path / "split" / "m.mpk", sig, pub) == modelpack.digest(tmp_path / "one" / "m.mpk")
    # the same layout saved from other weights: its first shard is a well-formed stand-in for ours
    modelpack.save(_layers(1), tmp_path / "other" / "m.mpk", max_shard_size=9000)
    shard = "m-00001-of-00003.mpk"
    assert {p.name for p in (tmp_path / "other").iterdir()} == {p.name for p in (tmp_path / "split").iterdir()}
    shutil.copyfile(tmp_path / "other" / shard, tmp_path / "split" / shard)
    with pytest.raises(IntegrityError, match=f"shard '{shard}' is not the one the index binds"):
        verify_signature(tmp_path / "split" / "m.mpk", sig, pub)
    # the index swapped too (a whole other pack of the same layout): every CRC and binding holds, the signature not
    shutil.copyfile(tmp_path / "other" / "m.mpk", tmp_path / "split" / "m.mpk")
    for name in ("m-00002-of-00003.mpk", "m-00003-of-00003.mpk"):
        shutil.copyfile(tmp_path / "other" / name, tmp_path / "split" / name)
    modelpack.verify(tmp_path / "split" / "m.mpk")
    changed = "; ".join(f"tensor 'layer{i}.weight' changed" for i in range(6))
    with pytest.raises(IntegrityError, match=changed):
        verify_signature(tmp_path / "split" / "m.mpk", sig, pub)
