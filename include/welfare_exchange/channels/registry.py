"""Channel name → channel: the one list of channels a protocol may name.

The built-in channels are loaded on first use (their modules are heavy: transports, crypto).
Another channel registers itself with :func:`register` — one call, and every exchange, the
protocol registry (through :mod:`welfare_exchange.protocols.channels`, the names it checks),
the DAG factory and the retention run know it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from welfare_exchange.protocols import channels as protocol_channels

if TYPE_CHECKING:
    from welfare_exchange.channels.base import Channel

#: The module that implements each channel the project ships (its ``CHANNEL``).
_BUILT_IN = {"sftp": "welfare_exchange.channels.sftp", "smime": "welfare_exchange.channels.smime"}

_registered: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    """Make ``channel`` known under its ``name`` (replacing an earlier registration of that name)."""
    _registered[channel.name] = channel
    protocol_channels.allow(channel.name, sender_identity=channel.sender_identity)
    return channel


def unregister(name: str) -> None:
    """Forget a channel registered with :func:`register` (tests); built-ins come back on next use."""
    _registered.pop(name, None)
    protocol_channels.forget(name)


def names() -> tuple[str, ...]:
    """Every channel a protocol may name: the built-ins, then those registered."""
    return protocol_channels.names()


def channel_for(protocol_or_name: Any) -> Channel:
    """The channel of a protocol (or a snapshot entry, or a name); a clear error for an unknown one."""
    if isinstance(protocol_or_name, str):
        name = protocol_or_name
    elif isinstance(protocol_or_name, dict):
        name = protocol_or_name["channel"]
    else:
        name = protocol_or_name.channel
    channel = _registered.get(name)
    if channel is None and name in _BUILT_IN:
        channel = register(importlib.import_module(_BUILT_IN[name]).CHANNEL)
    if channel is None:
        raise ValueError(f"no channel {name!r}; known channels: {', '.join(names())}")
    return channel


def for_place(where: str) -> Channel | None:
    """The channel whose stored copies are recorded under retention place ``where``; ``None`` for none."""
    for name in names():
        channel = channel_for(name)
        if where in channel.places:
            return channel
    return None
