"""grpc.health.v1 probe of an ``edgeml serve`` replica: exit 0 iff it answers SERVING.

The cloud image's HEALTHCHECK runs it (Docker has no native gRPC probe; Kubernetes has, and
the manifests use that instead). A draining replica answers NOT_SERVING and so fails the
probe. The health service needs no token, so the probe needs none either.

    python healthcheck.py [HOST:PORT] [--service edgeml.v1.Offload] [--timeout-s 2]
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, service: str, timeout_s: float, tls: bool) -> str:
    """The serving status name of ``service`` at ``target`` (raises grpc.RpcError)."""
    if tls:  # the system roots; the probe checks liveness, not the chain of trust
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
    else:
        channel = grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", nargs="?", default="127.0.0.1:50051")
    p.add_argument("--service", default="edgeml.v1.Offload", help="'' for the whole server")
    p.add_argument("--timeout-s", type=float, default=2.0)
    p.add_argument("--tls", action="store_true", help="the server has TLS on")
    args = p.parse_args(argv)
    try:
        status = check(args.target, args.service, args.timeout_s, args.tls)
    except grpc.RpcError as exc:
        print(f"healthcheck: {args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"healthcheck: {args.target}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
