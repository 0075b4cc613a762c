"""What services and clients agree on, written once: the events (envelope, streams, subjects and
payloads), the gRPC code generated from proto/, and the public API's document."""
