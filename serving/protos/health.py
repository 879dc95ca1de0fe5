"""The gRPC health checking messages (`grpc.health.v1`, `health.proto` of this folder), without
grpcio-health-checking: read by `serving.protos.read_proto` into a private pool of their own (no clash with a
grpc_health package a process may also load).

    from serving.protos import health
    request = health.HealthCheckRequest(service="")
    health.CHECK_METHOD            # "/grpc.health.v1.Health/Check"
    health.SERVING                 # 1

Server side: `serving.server` answers `Check` for "" (the whole server) and for the services it implements
(SERVING once a model version is loaded, NOT_SERVING before); an unknown service is NOT_FOUND, as the protocol
says.
"""
from __future__ import annotations

import os

from google.protobuf import descriptor_pool
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from serving.protos import HERE, _message_class_in, read_proto

PROTO_FILE = "health.proto"


def _build_pool():
    pool = descriptor_pool.DescriptorPool()
    with open(os.path.join(HERE, PROTO_FILE), encoding="utf-8") as f:
        fdp = read_proto(f.read(), PROTO_FILE, {})
    pool.AddSerializedFile(fdp.SerializeToString())
    return pool


POOL = _build_pool()
HealthCheckRequest = _message_class_in(POOL, "grpc.health.v1.HealthCheckRequest")
HealthCheckResponse = _message_class_in(POOL, "grpc.health.v1.HealthCheckResponse")
ServingStatus = EnumTypeWrapper(POOL.FindEnumTypeByName("grpc.health.v1.HealthCheckResponse.ServingStatus"))
UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN = (ServingStatus.Value(n) for n in
                                                  ("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"))

SERVICE_NAME = "grpc.health.v1.Health"
CHECK_METHOD = f"/{SERVICE_NAME}/Check"
