"""Loaded by Python at start-up under `qobs run`: chain the user's sitecustomize, then instrument."""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_mod = sys.modules.pop("sitecustomize", None)
try:
    import sitecustomize  # noqa: F401 - the user's own, if any
except ImportError:
    pass
except Exception as exc:  # noqa: BLE001
    print(f"qobs: the existing sitecustomize failed: {exc}", file=sys.stderr)

if os.environ.get("QOBS_AUTO_INSTRUMENT") == "1":
    try:
        import qobs

        qobs.instrument()
    except Exception as exc:  # noqa: BLE001 - never break the user's program
        print(f"qobs: instrumentation disabled: {exc}", file=sys.stderr)
