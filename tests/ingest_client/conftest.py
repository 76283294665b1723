"""The live stack of these tests (`live_stack`, in tests/conftest.py): one for the package."""

import pytest

from tests.conftest import stack_server

_stack_server = pytest.fixture(scope="package")(stack_server)
