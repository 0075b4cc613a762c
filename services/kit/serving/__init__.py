"""Running a service: settings, the runtime that wires every other layer, HTTP (Flask under
gunicorn) and gRPC serving, worker processes, outgoing calls and caller identity."""
