"""The names a protocol may give as its channel.

The protocol registry checks a protocol's channel against these; it knows names only, never
a channel's code. :mod:`welfare_exchange.channels.registry` (a layer above) adds the name of
every channel registered there, so a new channel is still one module plus its registration.
"""

from __future__ import annotations

#: The channels the project ships.
CHANNELS = ("sftp", "smime")

_added: set[str] = set()


def allow(name: str) -> None:
    """Accept ``name`` as a protocol's channel (called by the channel registry)."""
    _added.add(name)


def forget(name: str) -> None:
    _added.discard(name)


def names() -> tuple[str, ...]:
    """Every channel a protocol may name: the built-ins, then those registered."""
    return CHANNELS + tuple(sorted(n for n in _added if n not in CHANNELS))
