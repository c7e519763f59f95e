"""Reuse the Method 1 end-to-end fixture (signed protocol, SFTP account, key, synthetic store)."""

from tests.exchange.conftest import method1  # noqa: F401
