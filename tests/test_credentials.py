"""C2PA Content Credentials (clients/credentials.py), signed with a CA and leaf made here at test time."""
from __future__ import annotations

import datetime
import json

import cv2
import pytest

pytest.importorskip("c2pa")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from swapstream.clients import credentials, verify  # noqa: E402
from swapstream.faces import watermark as wm  # noqa: E402
from swapstream.faces.synth import pose_sequence, render_face  # noqa: E402

MODEL, SHA = "ae-demo", "5e" * 32


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swapstream tests")])


def _usage(**on) -> x509.KeyUsage:
    flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)
    return x509.KeyUsage(**{**flags, **on})


def _cert(subject, issuer, public_key, signing_key, ca: bool, issuer_public=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if ca:
        b = b.add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
    else:
        b = (b.add_extension(_usage(digital_signature=True), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False))
    if issuer_public is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    return b.sign(signing_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A local CA and an operator leaf it issued (files: chain.pem leaf first, key.pem, ca.pem)."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert(_name("Test CA"), _name("Test CA"), ca_key.public_key(), ca_key, ca=True)
    leaf = _cert(_name("Test Operator"), ca.subject, leaf_key.public_key(), ca_key, ca=False,
                 issuer_public=ca_key.public_key())
    (d / "chain.pem").write_bytes(_pem(leaf) + _pem(ca))
    (d / "key.pem").write_bytes(_key_pem(leaf_key))
    (d / "ca.pem").write_bytes(_pem(ca))
    self_key = ec.generate_private_key(ec.SECP256R1())
    selfie = _cert(_name("Self"), _name("Self"), self_key.public_key(), self_key, ca=False)
    (d / "self.pem").write_bytes(_pem(selfie))
    (d / "self.key").write_bytes(_key_pem(self_key))
    return d


def _video(path, marked: bool = True) -> str:
    frames = [render_face(5, p, (256, 256)) for p in pose_sequence(6, seed=5)]
    payload = wm.model_id(MODEL, SHA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 256))
    for f in frames:
        writer.write(wm.embed(f, (51, 60, 152, 152), payload) if marked else f)
    writer.release()
    return str(path)


def test_signed_mp4_reads_back_valid_and_trusted(pki, tmp_path):
    path = _video(tmp_path / "out.mp4")
    credentials.sign_file(path, (pki / "chain.pem").read_bytes(), str(pki / "key.pem"), MODEL, SHA)
    cred = credentials.read_credential(path)
    assert cred["state"] == "Valid" and cred["errors"] == []
    assert cred["action"] == "c2pa.created"
    assert cred["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    assert (cred["model"], cred["manifest_sha256"]) == (MODEL, SHA)
    assert cred["watermark_payload"] == f"{wm.model_id(MODEL, SHA):08x}"
    assert "Test Operator" in cred["signer"]
    trusted = credentials.read_credential(path, (pki / "ca.pem").read_text())
    assert trusted["state"] == "Trusted"
    # The signed file still plays: every frame is there.
    cap = cv2.VideoCapture(path)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_a_changed_byte_makes_the_credential_invalid(pki, tmp_path):
    path = _video(tmp_path / "out.mp4")
    credentials.sign_file(path, str(pki / "chain.pem"), str(pki / "key.pem"), MODEL, SHA)
    data = bytearray(open(path, "rb").read())
    at = data.find(b"mdat") + 64  # inside the video samples
    data[at] ^= 0xFF
    open(path, "wb").write(bytes(data))
    cred = credentials.read_credential(path)
    assert cred["state"] == "Invalid" and cred["errors"]


def test_refusals(pki, tmp_path):
    path = _video(tmp_path / "out.mp4")
    before = open(path, "rb").read()
    with pytest.raises(credentials.CredentialError, match="self-signed"):
        credentials.sign_file(path, str(pki / "self.pem"), str(pki / "self.key"), MODEL, SHA)
    with pytest.raises(credentials.CredentialError, match="private key"):
        credentials.sign_file(path, str(pki / "chain.pem"), str(pki / "chain.pem"), MODEL, SHA)
    with pytest.raises(credentials.CredentialError, match="cannot read"):
        credentials.sign_file(path, str(tmp_path / "none.pem"), str(pki / "key.pem"), MODEL, SHA)
    assert open(path, "rb").read() == before, "a refused signing leaves the file as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"], "no temporary file left"
    assert credentials.read_credential(path) is None


def test_verify_reports_mark_and_credential(pki, tmp_path, capsys):
    path = _video(tmp_path / "out.mp4")
    credentials.sign_file(path, str(pki / "chain.pem"), str(pki / "key.pem"), MODEL, SHA)
    report = tmp_path / "r.json"
    assert verify.main([path, "--trust", str(pki / "ca.pem"), "--quiet", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "SWAPPED" in out and "content credential: Trusted" in out and MODEL in out
    assert "names the model whose mark the frames carry" in out
    data = json.loads(report.read_text())
    assert data["credential"]["model"] == MODEL and data["payload"] == f"{wm.model_id(MODEL, SHA):08x}"
    # The credential alone does not make a video count as marked: an unmarked signed file exits 1.
    plain = _video(tmp_path / "plain.mp4", marked=False)
    credentials.sign_file(plain, str(pki / "chain.pem"), str(pki / "key.pem"), MODEL, SHA)
    assert verify.main([plain, "--quiet"]) == 1
    assert "content credential: Valid" in capsys.readouterr().out


def test_signing_alg_follows_the_key():
    assert credentials.signing_alg(_key_pem(ec.generate_private_key(ec.SECP384R1()))) == "es384"
    with pytest.raises(credentials.CredentialError):
        credentials.signing_alg(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_stream_signs_its_output_with_the_served_models_identity(pki, tmp_path):
    """`stream --sign-cert/--sign-key` through a real server: the credential names the model and the
    sha256 of its manifest.json as the server reports it in ListModels."""
    from swapstream.clients import stream
    from swapstream.faces.model_folder import MANIFEST_FILE, file_sha256
    from swapstream.server.service import run_server
    from tests.server_fixtures import write_negative_model

    models = tmp_path / "models"
    write_negative_model(str(models / "neg"), size=32)
    src = _video(tmp_path / "in.mp4", marked=False)
    out = str(tmp_path / "out.mp4")
    with run_server(str(models), 0, device="cpu") as port:
        args = [src, "-o", out, "--model", "neg", "--server", f"127.0.0.1:{port}", "--no-progress"]
        assert stream.main(args + ["--sign-cert", str(pki / "chain.pem")]) == 2  # the key is missing
        assert stream.main(args + ["--sign-cert", str(pki / "chain.pem"), "--sign-key", str(pki / "key.pem")]) == 0
    cred = credentials.read_credential(out, (pki / "ca.pem").read_text())
    assert cred["state"] == "Trusted"
    assert (cred["model"], cred["manifest_sha256"]) == ("neg", file_sha256(str(models / "neg" / MANIFEST_FILE)))
