from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_budgets():
    from qobs import budgets

    budgets.clear()
    budgets.reset_connection()
    yield
    budgets.clear()
    budgets.reset_connection()
