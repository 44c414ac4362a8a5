"""Bearer tokens, TLS and mutual TLS on a real loopback server, with throwaway certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import grpc
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from transport_helpers import start_server

from edgeml.bundle import Bundle
from edgeml.transport.auth import load_tokens
from edgeml.transport.client import ClientConfig, EdgeClient, OffloadError

TOKEN = "s3cret-token-for-tests"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = (subject, key) if issuer is None else issuer
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.with_suffix(".key").write_bytes(pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca, server (signed by ca), edge (client cert by ca), rogue_ca, rogue (client by rogue)."""
    d = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "edge", "rca", "r")}
    ca = _cert("EdgeML test CA", keys["ca"], None, ca=True)
    rogue_ca = _cert("Rogue CA", keys["rca"], None, ca=True)
    _write(d / "ca", ca, None)
    _write(d / "rogue_ca", rogue_ca, None)
    _write(
        d / "server",
        _cert("localhost", keys["srv"], ("EdgeML test CA", keys["ca"]), server=True),
        keys["srv"],
    )
    _write(d / "edge", _cert("edge-1", keys["edge"], ("EdgeML test CA", keys["ca"])), keys["edge"])
    _write(d / "rogue", _cert("mallory", keys["r"], ("Rogue CA", keys["rca"])), keys["r"])
    return d


def _call(bundle: Bundle, **client_kwargs: object) -> grpc.StatusCode:
    """One real inference through an EdgeClient; the status it ended with."""
    m = bundle.manifest
    cfg = ClientConfig(default_timeout_s=5.0, max_attempts=1, **client_kwargs)  # type: ignore[arg-type]
    with EdgeClient(cfg, m.weights_sha256) as c:
        try:
            c.infer(torch.zeros(1, *m.cut_points[0].shape), 0, m.num_exits - 1, 1.0)
        except OffloadError as exc:
            assert exc.code is not None
            return exc.code
    return grpc.StatusCode.OK


def test_token_required_when_configured_and_health_stays_open(tiny_bundle):
    srv = start_server(tiny_bundle, tokens=(TOKEN, "older-token"))
    try:
        t = srv.address
        assert _call(tiny_bundle, targets=t) is grpc.StatusCode.UNAUTHENTICATED
        assert _call(tiny_bundle, targets=t, token="wrong") is grpc.StatusCode.UNAUTHENTICATED
        assert _call(tiny_bundle, targets=t, token=TOKEN) is grpc.StatusCode.OK
        assert _call(tiny_bundle, targets=t, token="older-token") is grpc.StatusCode.OK
        with grpc.insecure_channel(t) as ch:  # probes need no secret
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        rejected = srv.metrics.value(
            "edgeml_request_errors_total", {"method": "Infer", "code": "UNAUTHENTICATED"}
        )
        assert rejected == 2
    finally:
        srv.stop(0)


def test_without_tokens_no_token_is_needed(tiny_bundle):
    srv = start_server(tiny_bundle)
    try:
        assert _call(tiny_bundle, targets=srv.address) is grpc.StatusCode.OK
    finally:
        srv.stop(0)


def test_tls_server_certificate(tiny_bundle, pki):
    srv = start_server(tiny_bundle, tls_cert=pki / "server.crt", tls_key=pki / "server.key")
    try:
        t, p = srv.address, srv.port
        assert _call(tiny_bundle, targets=t, root_ca=pki / "ca.crt") is grpc.StatusCode.OK
        assert (
            _call(tiny_bundle, targets=f"localhost:{p}", root_ca=pki / "ca.crt")
            is grpc.StatusCode.OK
        )
        # plaintext client, or a client that trusts another CA: no connection
        assert _call(tiny_bundle, targets=t) is grpc.StatusCode.UNAVAILABLE
        assert (
            _call(tiny_bundle, targets=t, root_ca=pki / "rogue_ca.crt")
            is grpc.StatusCode.UNAVAILABLE
        )
    finally:
        srv.stop(0)


def test_mutual_tls_needs_a_client_cert_from_the_client_ca(tiny_bundle, pki):
    srv = start_server(
        tiny_bundle,
        tls_cert=pki / "server.crt",
        tls_key=pki / "server.key",
        client_ca=pki / "ca.crt",
        tokens=(TOKEN,),
    )
    ca = pki / "ca.crt"
    edge = {"tls_cert": pki / "edge.crt", "tls_key": pki / "edge.key"}
    rogue = {"tls_cert": pki / "rogue.crt", "tls_key": pki / "rogue.key"}
    try:
        t = srv.address
        assert _call(tiny_bundle, targets=t, root_ca=ca, token=TOKEN, **edge) is grpc.StatusCode.OK
        assert _call(tiny_bundle, targets=t, root_ca=ca, token=TOKEN) is grpc.StatusCode.UNAVAILABLE
        assert (
            _call(tiny_bundle, targets=t, root_ca=ca, token=TOKEN, **rogue)
            is grpc.StatusCode.UNAVAILABLE
        )
        # a good certificate does not replace the token
        assert _call(tiny_bundle, targets=t, root_ca=ca, **edge) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        srv.stop(0)


def test_load_tokens_from_file_and_environment(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text("# rotated weekly\nnew-token\n\nold-token\n")
    f.chmod(0o600)
    monkeypatch.setenv("EDGEML_TEST_TOKEN", "env-token")
    assert load_tokens(f, "EDGEML_TEST_TOKEN") == ["new-token", "old-token", "env-token"]
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="token_file"):
        load_tokens(tmp_path / "empty")
    monkeypatch.delenv("EDGEML_TEST_TOKEN")
    with pytest.raises(ValueError, match="EDGEML_TEST_TOKEN"):
        load_tokens(token_env="EDGEML_TEST_TOKEN")
    (tmp_path / "spaced").write_text("two words\n")
    with pytest.raises(ValueError, match="without spaces"):
        load_tokens(tmp_path / "spaced")


def test_the_edge_daemon_speaks_mutual_tls(profiled_bundle, pki, tmp_path, caplog):
    from edgeml.cli import main

    srv = start_server(
        profiled_bundle,
        tls_cert=pki / "server.crt",
        tls_key=pki / "server.key",
        client_ca=pki / "ca.crt",
    )
    log = tmp_path / "edge.jsonl"
    base = ["edge", str(profiled_bundle.path), "--cloud", f"127.0.0.1:{srv.port}",
            "--policy", "cloud_only", "--max-inputs", "5", "--rate", "0", "--log", str(log),
            "--edge-slowdown", "1", "--root-ca", str(pki / "ca.crt")]  # fmt: skip
    try:
        assert (
            main([*base, "--tls-cert", str(pki / "edge.crt"), "--tls-key", str(pki / "edge.key")])
            == 0
        )
        recs = [json.loads(line) for line in log.read_text().splitlines()]
        wheres = [r["where"] for r in recs]
        assert len(wheres) == 5 and wheres.count("cloud") >= 3  # a busy core may miss one
        log.unlink()
        caplog.clear()
        assert main(base) == 0  # no client certificate: answered locally, and told why
        assert {json.loads(line)["where"] for line in log.read_text().splitlines()} == {"fallback"}
        assert "tls handshake failed" in caplog.text.lower(), caplog.text
    finally:
        srv.stop(0)


def test_a_bad_pem_file_is_named(tiny_bundle, tmp_path, capsys):
    from edgeml.cli import main

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    code = main(["serve", str(tiny_bundle.path), "--port", "0",
                 "--tls-cert", str(junk), "--tls-key", str(junk)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "tls_cert/tls_key" in err and "junk.pem" in err and "port" not in err
