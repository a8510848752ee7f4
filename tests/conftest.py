import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "lib"))
from ferrytest import Procs  # noqa: E402


@pytest.fixture
def procs(tmp_path):
    with Procs(str(tmp_path)) as p:
        yield p
