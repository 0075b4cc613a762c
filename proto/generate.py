"""Generate the Python gRPC code from proto/ into services/contracts/ (the import package
delinkcious.contracts, which also holds the event and public API contracts).

Run by `./build.sh proto`; tests/test_proto.py regenerates into a temporary directory and fails when
the committed code differs, so generated code is never edited by hand nor left stale.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPOSITORY = PROTO_ROOT.parent
# proto/delinkcious/contracts/... generates delinkcious/contracts/..., which is services/contracts/ here.
GENERATED_PACKAGE = Path("delinkcious") / "contracts"
TARGET = REPOSITORY / "services" / "contracts"
HEADER = "# Generated from proto/ by proto/generate.py: do not edit.\n"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(target: Path = TARGET) -> list[Path]:
    """Write the generated modules under `target`; returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        arguments = [
            "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={scratch}", f"--pyi_out={scratch}", f"--grpc_python_out={scratch}",
            *(str(path) for path in proto_files()),
        ]  # fmt: skip
        if protoc.main(arguments) != 0:
            raise RuntimeError("protoc failed")
        produced = Path(scratch) / GENERATED_PACKAGE
        # Only the generated packages are replaced: the target holds hand-written contracts too.
        for generated_package in (path for path in produced.iterdir() if path.is_dir()):
            shutil.rmtree(target / generated_package.name, ignore_errors=True)
        written = []
        for source in sorted(produced.rglob("*")):
            if source.is_dir():
                continue
            destination = target / source.relative_to(produced)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(HEADER + source.read_text())
            written.append(destination)
        packages = {parent for path in written for parent in path.parents if parent.is_relative_to(target)}
        for package in sorted(packages):
            (package / "__init__.py").touch()
        return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET):
        print(path.relative_to(REPOSITORY) if path.is_relative_to(REPOSITORY) else path)
