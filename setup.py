"""Package discovery, the one thing pyproject.toml cannot say: the import package `delinkcious` is the
`services/` tree, and every package below it is found rather than listed. Everything else about the
project is in pyproject.toml."""
from setuptools import find_packages, setup

setup(
    package_dir={"delinkcious": "services"},
    packages=["delinkcious", *(f"delinkcious.{name}" for name in find_packages("services"))],
)
