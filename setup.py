"""Build script: the native runtime extension is declared here (pyproject.toml holds the metadata)."""

from setuptools import setup

setup()
