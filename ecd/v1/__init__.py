"""Generated gRPC stubs for the ``ecd.v1`` protocol (``proto/ecd/v1/ecd.proto``)."""
