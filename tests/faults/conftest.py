"""Fixtures of the fault suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faultkit import Kernel


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    """A real IPython kernel with ``%load_ext servekit`` done; shut down gracefully at the end."""
    k = Kernel()
    yield k
    k.shutdown()
