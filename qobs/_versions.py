"""Installed SDK versions, read from package metadata (never by importing the SDK)."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def sdk_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


SDKS = ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "pennylane", "pennylane-lightning")


def versions() -> dict[str, str | None]:
    from qobs import __version__

    return {"qobs": __version__, **{d: sdk_version(d) for d in SDKS}}
