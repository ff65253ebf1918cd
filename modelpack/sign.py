"""Signatures over a pack's content digest, as OpenSSF model-signing bundles (optional extra ``sign``).

A signature is a standard model-signing v1 bundle (a Sigstore bundle holding
a DSSE-signed in-toto statement). Its resources are the pack's parts (see
modelpack.digests): the structure, the spec and each tensor, so the subject
digest is the pack's content digest and re-saving or re-splitting the pack
needs no new signature. A signature made by the model-signing tool over the
file itself (one resource: the file) verifies too. Keys are elliptic-curve
PEM files; keyless Sigstore signing needs the network and is not wrapped here.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from . import api
from .digests import part_digests, root_digest, describe_part, STRUCTURE
from .errors import IntegrityError, MissingDependencyError

__all__ = ["sign", "verify_signature"]

_HASH = "sha256"


def _model_signing() -> Any:
    try:
        from model_signing import manifest
        from model_signing._hashing import hashing
        from model_signing._signing import sign_ec_key, signing, sign_sigstore_pb
    except ImportError as e:
        raise MissingDependencyError(
            "signatures need OpenSSF model-signing: pip install 'modelpack[sign]'") from e
    return manifest, hashing, sign_ec_key, signing, sign_sigstore_pb


def _manifest(path: str, parts: dict[str, bytes]) -> Any:
    manifest, hashing, *_ = _model_signing()
    items = [manifest.FileManifestItem(path=PurePosixPath(name), digest=hashing.Digest(_HASH, value))
             for name, value in parts.items()]
    return manifest.Manifest(Path(path).name, items, manifest._FileSerialization(_HASH))


def sign(path: str | os.PathLike[str], key: str | os.PathLike[str], signature: str | os.PathLike[str] | None = None,
         *, password: str | None = None) -> Path:
    """Sign the pack's content with an EC private key (PEM); write the bundle to ``signature`` (default FILE.sig).

    The pack is fully checked (every CRC-32 and recorded SHA-256) before anything is signed.
    """
    _, _, sign_ec_key, signing, _ = _model_signing()
    with api.Pack(path) as pack:
        pack.verify()
        parts = part_digests(pack)
    out = Path(signature) if signature is not None else Path(f"{os.fspath(path)}.sig")
    payload = signing.Payload(_manifest(os.fspath(path), parts))
    sign_ec_key.Signer(Path(key), password).sign(payload).write(out)
    return out


def verify_signature(path: str | os.PathLike[str], signature: str | os.PathLike[str],
                     public_key: str | os.PathLike[str]) -> str:
    """Check the bundle's signature with the public key, then the pack against what it signed.

    Returns the signed content digest; raises IntegrityError naming each part that changed.
    """
    _, _, sign_ec_key, _, sign_sigstore_pb = _model_signing()
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    path = os.fspath(path)
    try:
        bundle = sign_sigstore_pb.Signature.read(Path(signature))
        expected = sign_ec_key.Verifier(Path(public_key)).verify(bundle)
    except (ValueError, KeyError, TypeError, InvalidSignature, UnsupportedAlgorithm) as e:  # bad key, bundle or signature
        raise IntegrityError(f"the signature does not verify with this public key: {str(e)[:300] or type(e).__name__}",
                             where=os.fspath(signature), source=path) from e
    signed = {rd.identifier: rd.digest.digest_value for rd in expected.resource_descriptors()}
    if STRUCTURE not in signed:  # signed by the model-signing tool over the file's bytes
        return _verify_file_signature(path, signature, public_key)
    with api.Pack(path) as pack:
        pack.verify()
        actual = part_digests(pack)
    problems = [f"{describe_part(p)} changed" for p in sorted(signed) if p in actual and actual[p] != signed[p]]
    problems += [f"{describe_part(p)} is missing" for p in sorted(signed) if p not in actual]
    problems += [f"{describe_part(p)} was not signed" for p in sorted(actual) if p not in signed]
    if problems:
        raise IntegrityError("the pack differs from what was signed: " + "; ".join(problems), source=path)
    return root_digest(actual)


def _verify_file_signature(path: str, signature: str | os.PathLike[str], public_key: str | os.PathLike[str]) -> str:
    from model_signing import verifying

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(Path(path), Path(signature))
    except ValueError as e:
        raise IntegrityError(f"the file differs from what was signed: {str(e)[:300]}", source=path) from e
    with api.Pack(path) as pack:  # the bytes are the signed ones; the pack must still be a sound .mpk
        pack.verify()
        return root_digest(part_digests(pack))
