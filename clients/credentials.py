"""C2PA Content Credentials on the files `stream` writes (c2pa-python), and reading them back.

The manifest says what the file is: one `c2pa.created` action whose digitalSourceType is IPTC's
`compositeWithTrainedAlgorithmicMedia` (real footage with a trained model's output composited
in), the model's name and manifest hash, and the watermark payload that model leaves in the
frames. It is signed with the operator's certificate chain (leaf first; the leaf must be issued
by a CA: c2pa refuses a self-signed signing certificate), so anyone holding the operator's CA
certificate can check who made the file and that not a byte of it changed since.
"""
from __future__ import annotations

import os
import tempfile

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from swapstream.faces import watermark as wm
from swapstream.faces.errors import InputError

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
ASSERTION_LABEL = "org.swapstream.model"
GENERATOR = {"name": "swapstream", "version": "0.1.0"}
_CURVE_ALG = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


class CredentialError(InputError):
    """A certificate, key or file that cannot be signed or read (a one-line reason)."""


def _pem(value: str | bytes | os.PathLike, what: str) -> bytes:
    """PEM text given as bytes/str contents, or the path of a file holding it."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str) and "-----BEGIN" in value:
        data = value.encode("ascii", "replace")
    else:
        try:
            with open(value, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise CredentialError(f"cannot read the {what} {value}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise CredentialError(f"the {what} is not PEM")
    return data


def signing_alg(key_pem: bytes) -> str:
    """The C2PA algorithm name for a private key (EC P-256/384/521, RSA -> PS256, Ed25519)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"the signing key is not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALG:
        return _CURVE_ALG[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise CredentialError(f"C2PA cannot sign with a {type(key).__name__}; use EC P-256/384/521, RSA or Ed25519")


def manifest_definition(model: str, manifest_sha: str, title: str) -> dict:
    """The C2PA manifest definition `sign_file` signs."""
    payload = wm.model_id(model, manifest_sha)
    return {
        "claim_generator_info": [GENERATOR],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": GENERATOR,
                "description": f"faces swapped by the model {model}",
            }]}},
            {"label": ASSERTION_LABEL, "data": {
                "name": model, "manifest_sha256": manifest_sha, "watermark_payload": f"{payload:08x}",
            }},
        ],
    }


def sign_file(path: str, cert_chain_pem, key_pem, model: str, manifest_sha: str) -> None:
    """Embed a signed C2PA manifest in the file at `path` (mp4, mov, avi, jpg, png...), in place.

    cert_chain_pem: the operator's certificate chain, leaf first (PEM contents or a file path).
    key_pem: the leaf's private key (PEM contents or a file path).
    The file is replaced only when signing succeeded.
    """
    if not os.path.isfile(path):
        raise CredentialError(f"{path} does not exist")
    chain, key = _pem(cert_chain_pem, "certificate chain"), _pem(key_pem, "signing key")
    alg = signing_alg(key)
    definition = manifest_definition(model, manifest_sha, os.path.basename(path))
    folder, name = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=ext, dir=folder)
    os.close(fd)
    try:
        try:
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, None))
            with c2pa.Builder(definition) as builder:
                builder.sign_file(path, tmp, signer)
        except c2pa.C2paError as exc:
            raise CredentialError(f"c2pa could not sign {path}: {_reason(exc)}{_chain_hint(chain)}") from None
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _chain_hint(chain: bytes) -> str:
    """Why c2pa may have refused the chain, where we can tell."""
    try:
        leaf = x509.load_pem_x509_certificate(chain)
    except ValueError:
        return " (the chain's first certificate is not readable PEM)"
    if leaf.issuer == leaf.subject:
        return " (the leaf is self-signed: c2pa needs a signing certificate issued by a CA, chain leaf first)"
    return ""


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def read_credential(path: str, trust_anchors_pem: str | None = None) -> dict | None:
    """Summarise the file's C2PA credential; None when it has none.

    state: "Trusted" (signature valid and chained to `trust_anchors_pem`), "Valid" (signature
    and hashes valid, signer not checked against a trust list), or "Invalid" (with `errors`:
    the failed checks, e.g. a file changed after signing).
    """
    context = None
    if trust_anchors_pem:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust_anchors_pem},
                                          "verify": {"verify_trust": True}})
    try:
        with c2pa.Reader(path, context=context) as reader:
            manifest = reader.get_active_manifest() or {}
            state = reader.get_validation_state() or "unknown"
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        if type(exc).__name__.endswith("ManifestNotFound") or "ManifestNotFound" in str(exc):
            return None
        return {"state": "unreadable", "reason": _reason(exc)}
    active = results.get("activeManifest", {}) if isinstance(results, dict) else {}
    # An unknown signer is what "Valid" rather than "Trusted" already says: not an integrity failure.
    errors = [f"{e.get('code')}: {e.get('explanation', '')}".strip() for e in active.get("failure", [])
              if e.get("code") != "signingCredential.untrusted"]
    summary = {"state": state, "trusted": state == "Trusted", "errors": errors}
    info = manifest.get("signature_info") or {}
    summary["signer"] = ", ".join(v for v in (info.get("common_name"), info.get("issuer")) if v) or None
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            for action in data.get("actions", []):
                if action.get("action") == "c2pa.created":
                    summary["action"] = "c2pa.created"
                    summary["digital_source_type"] = action.get("digitalSourceType", "").rsplit("/", 1)[-1]
        elif label == ASSERTION_LABEL:
            summary["model"] = data.get("name")
            summary["manifest_sha256"] = data.get("manifest_sha256")
            summary["watermark_payload"] = data.get("watermark_payload")
    return summary
