"""The generated gRPC code in services/contracts is exactly what proto/ generates: never edited by hand,
never stale (run `./build.sh proto` after changing a .proto file)."""
from __future__ import annotations

from pathlib import Path

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    return load_script("proto/generate.py")


def test_generated_code_is_up_to_date(tmp_path):
    generator = load_generator()
    fresh = generator.generate(tmp_path / "contracts")
    committed = ROOT / "services" / "contracts"
    fresh_files = {path.relative_to(tmp_path / "contracts"): path.read_text() for path in fresh}
    committed_files = {path.relative_to(committed): path.read_text() for path in committed.rglob("*.py*")
                       if path.name != "__init__.py" and "__pycache__" not in path.parts
                       and path.relative_to(committed).parts[0] in {name.parts[0] for name in fresh_files}}
    assert fresh_files.keys() == committed_files.keys()
    stale = [str(name) for name in fresh_files if fresh_files[name] != committed_files[name]]
    assert not stale, f"generated code is stale, run ./build.sh proto: {stale}"


def test_generated_code_imports_and_describes_the_news_contract():
    from delinkcious.contracts.news.v1 import news_pb2, news_pb2_grpc

    service = news_pb2.DESCRIPTOR.services_by_name["NewsService"]
    assert service.full_name == "delinkcious.news.v1.NewsService"
    assert [method.name for method in service.methods] == ["GetNews"]
    assert news_pb2.EventType.Name(news_pb2.LINK_DELETED) == "LINK_DELETED"
    assert hasattr(news_pb2_grpc, "NewsServiceStub")
