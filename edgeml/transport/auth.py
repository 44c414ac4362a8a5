"""Bearer-token auth and TLS credentials shared by the cloud server and the edge client.

Tokens travel as ``authorization: Bearer <token>`` metadata and are checked by a server
interceptor before the request message is even parsed, so an unauthenticated peer costs
the server almost nothing. The health service stays open (load balancers and orchestrators
probe it without secrets). Without TLS a token crosses the network in clear text: use both.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "AUTH_HEADER",
    "BearerTokenInterceptor",
    "channel_credentials",
    "load_tokens",
    "server_credentials",
]

log = logging.getLogger(__name__)

AUTH_HEADER = "authorization"
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _check_token(token: str, where: str) -> str:
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError(f"{where}: a token must be non-empty printable text without spaces")
    return token


def load_tokens(token_file: str | Path | None = None, token_env: str | None = None) -> list[str]:
    """Tokens from a file (one per line, ``#`` comments; several allow rotation) and/or an
    environment variable. Raises ``ValueError`` when a named source holds no token."""
    tokens: list[str] = []
    if token_file is not None:
        path = Path(token_file)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by group/others; chmod 600 it", path)
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        found = [_check_token(ln, str(path)) for ln in lines if ln and not ln.startswith("#")]
        if not found:
            raise ValueError(f"token_file: {path} holds no token")
        tokens += found
    if token_env is not None:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise ValueError(f"token_env: environment variable {token_env!r} is unset or empty")
        tokens.append(_check_token(value, f"${token_env}"))
    return tokens


def _abort_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails without parsing the request."""

    def abort(_request: Any, context: grpc.ServicerContext) -> None:
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without a valid ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    :param tokens: accepted tokens (compared in constant time).
    :param open_prefixes: method prefixes that need no token (the health service).
    :param on_reject: called with the method name of each rejected call (metrics).
    """

    def __init__(
        self,
        tokens: Sequence[str],
        open_prefixes: Iterable[str] = (HEALTH_PREFIX,),
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if not tokens:
            raise ValueError("tokens: need at least one token")
        self._tokens = [_check_token(t, "tokens").encode() for t in tokens]
        self._open = tuple(open_prefixes)
        self._on_reject = on_reject

    def _valid(self, header: str | bytes | None) -> bool:
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header or not header.startswith("Bearer "):
            return False
        given = header[len("Bearer ") :].strip().encode("utf-8", "replace")
        ok = False
        for token in self._tokens:  # no early exit: time does not depend on which matched
            ok |= hmac.compare_digest(given, token)
        return ok

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        if method.startswith(self._open):
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        header = next((v for k, v in metadata if k == AUTH_HEADER), None)
        if self._valid(header):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None
        if self._on_reject is not None:
            self._on_reject(method)
        reason = "missing" if header is None else "invalid"
        return _abort_handler(
            handler,
            grpc.StatusCode.UNAUTHENTICATED,
            f"authorization: {reason} token; send metadata 'authorization: Bearer <token>'",
        )


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def check_pem(
    cert: str | Path | None, key: str | Path | None, ca: str | Path | None, what: str
) -> None:
    """A clear error for an unreadable or malformed PEM file (gRPC only says that the port
    or the channel failed): the cert/key pair must load and match, the CA must parse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for path, name in ((cert, "tls_cert"), (key, "tls_key"), (ca, what)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{name}: {path} is not a readable file")
    try:
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ValueError(
            f"tls_cert/tls_key: {cert} and {key} are not a PEM certificate chain and its "
            f"matching private key ({exc.reason or exc})"
        ) from None
    try:
        if ca is not None:
            ctx.load_verify_locations(str(ca))
    except ssl.SSLError as exc:
        reason = exc.reason or exc
        raise ValueError(f"{what}: {ca} is not a PEM CA certificate ({reason})") from None


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS for the server; with ``client_ca`` the client must present a cert it signed (mTLS)."""
    check_pem(cert, key, client_ca, "client_ca")
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=_read(client_ca),
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    root_ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS for the client: ``root_ca`` verifies the server (None: system roots); ``cert`` and
    ``key`` are the client's own pair for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert/tls_key: give both for mutual TLS, or neither")
    check_pem(cert, key, root_ca, "root_ca")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(root_ca), private_key=_read(key), certificate_chain=_read(cert)
    )
