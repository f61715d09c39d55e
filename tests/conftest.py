"""Shared test set-up: make sure the gRPC stubs exist (they are generated, never committed)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join("protos", "swapstream", "v1", "swap.proto")
STUB = os.path.join(ROOT, "protos", "swapstream", "v1", "swap_pb2.py")


def pytest_configure(config):
    """Generate stubs when someone runs pytest without `make` (same command as the Makefile)."""
    proto = os.path.join(ROOT, PROTO)
    if os.path.isfile(proto) and (not os.path.isfile(STUB) or os.path.getmtime(STUB) < os.path.getmtime(proto)):
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", "--python_out=protos",
                        "--grpc_python_out=protos", "--pyi_out=protos", PROTO], cwd=ROOT, check=True)
