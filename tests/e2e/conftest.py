"""The real control plane, started once per test session and stopped at its end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, binaries_missing


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = binaries_missing()
    if missing:  # `make test` builds them first; a plain pytest run says how
        pytest.fail(
            f"the control plane is not built ({', '.join(missing)} missing): run make cluster",
            pytrace=False,
        )
    c = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        c.start()
        yield c
    finally:
        c.stop()
