"""The one seam between the runtime and gRPC: ``serde`` converts protobuf messages to and from
:mod:`ecd.types` records, ``catalog`` maps errors to gRPC status codes, ``rpc`` starts servers and
sets every channel option. Only this package and the ``*/service.py`` modules import grpc or the
generated stubs (tests/test_architecture.py checks it)."""
