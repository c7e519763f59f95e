"""No code outside ``welfare_exchange.channels`` asks which channel a protocol uses.

Method 1, Method 2, the feeds, retention and the DAG factory go through the Channel interface;
a comparison of a ``.channel`` / ``["channel"]`` value with a channel's name anywhere else
(``if protocol.channel == "sftp"``) is a branch a new channel would have to be added to.
"""

from __future__ import annotations

import ast
import pathlib

from welfare_exchange.channels import registry

PACKAGE = pathlib.Path(registry.__file__).resolve().parents[1]


def _is_channel_value(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "channel"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "channel"
    return False


def _names_a_channel(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_channel(e, names) for e in node.elts)
    return False


def channel_branches(source: str, names: set[str]) -> list[int]:
    """Line numbers of comparisons of a channel value with a channel's name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_channel_value(o) for o in operands) and any(_names_a_channel(o, names) for o in operands):
                found.append(node.lineno)
    return found


def test_the_scan_finds_a_channel_branch():
    names = set(registry.names())
    assert channel_branches('if protocol.channel == "sftp":\n    pass\n', names) == [1]
    assert channel_branches('x = entry["channel"] in ("sftp", "smime")\n', names) == [1]
    assert channel_branches('if protocol.channel != "sftp":\n    pass\n', names) == [1]
    assert channel_branches('if "smime" != entry["channel"]:\n    pass\n', names) == [1]
    assert channel_branches('ok = protocol.channel not in {"sftp"}\n', names) == [1]
    assert channel_branches("if protocol.channel == other:\n    pass\n", names) == []


def test_no_module_outside_channels_branches_on_the_channel():
    names = set(registry.names())
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "channels" in path.relative_to(PACKAGE).parts:
            continue
        found = channel_branches(path.read_text(), names)
        offenders += [f"{path.relative_to(PACKAGE.parent)}:{line}" for line in found]
    assert offenders == [], "ask the channel (welfare_exchange.channels.base.Channel) instead: " + ", ".join(offenders)
