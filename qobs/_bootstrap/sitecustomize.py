"""Loaded by Python at start-up under `qobs run`: run the user's own sitecustomize, then instrument."""

import importlib.machinery
import importlib.util
import os
import sys


def _chain_user_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_qobs_user_sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    _chain_user_sitecustomize()
except Exception as exc:  # noqa: BLE001
    print(f"qobs: the existing sitecustomize failed: {exc}", file=sys.stderr)

if os.environ.get("QOBS_AUTO_INSTRUMENT") == "1":
    try:
        import qobs

        qobs.instrument()
    except Exception as exc:  # noqa: BLE001 - never break the user's program
        print(f"qobs: instrumentation disabled: {exc}", file=sys.stderr)
