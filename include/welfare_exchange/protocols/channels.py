"""The names a protocol may give as its channel.

The protocol registry checks a protocol's channel against these; it knows names only, never
a channel's code. :mod:`welfare_exchange.channels.registry` (a layer above) adds the name of
every channel registered there, so a new channel is still one module plus its registration.
"""

from __future__ import annotations

#: The channels the project ships.
CHANNELS = ("sftp", "smime")

#: Built-in channels whose protocols must register the municipality's sender address and
#: certificate (the channel ties requests to both); a registered channel says so itself.
_SENDER_IDENTITY = {"smime"}

_added: set[str] = set()
_added_sender_identity: set[str] = set()


def allow(name: str, *, sender_identity: bool = False) -> None:
    """Accept ``name`` as a protocol's channel (called by the channel registry)."""
    _added.add(name)
    if sender_identity:
        _added_sender_identity.add(name)


def forget(name: str) -> None:
    _added.discard(name)
    _added_sender_identity.discard(name)


def needs_sender_identity(name: str) -> bool:
    """Whether a protocol on channel ``name`` must register a sender address and certificate."""
    return name in _SENDER_IDENTITY or name in _added_sender_identity


def names() -> tuple[str, ...]:
    """Every channel a protocol may name: the built-ins, then those registered."""
    return CHANNELS + tuple(sorted(n for n in _added if n not in CHANNELS))
