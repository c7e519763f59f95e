"""The structure docs/ARCHITECTURE.md describes, kept by reading the code (``ast``, nothing is run).

* One settings module: only ``welfare_exchange/settings.py`` reads ``WELFARE_EXCHANGE_*`` variables,
  each listed once with its one default. Devtools and the demo may *set* variables for the
  processes they start.
"""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "welfare_exchange"
PREFIX = "WELFARE_EXCHANGE_"

#: Reads of a variable whose name the user gives on the command line (``--password-env NAME``):
#: not a setting of the project. (file relative to the root, function)
USER_NAMED_VARIABLES = {
    ("include/welfare_exchange/cliutil.py", "read_password"),
    ("include/welfare_exchange/intake/commands.py", "_password"),
}


def _sources(*folders: str):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path, ast.parse(path.read_text(), filename=str(path))


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (so a key held in a constant is still seen)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_environ(node: ast.AST) -> bool:
    """``os.environ``, or ``environ`` imported from ``os``."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def _enclosing_function(node: ast.AST, parents) -> str | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return node.name
    return None


def _environment_reads(path: pathlib.Path, tree: ast.Module) -> list[str]:
    """Every place that reads a ``WELFARE_EXCHANGE_*`` variable, or the environment in a way that
    could (a key this scan cannot resolve, a bulk read, an alias of ``os.environ``)."""
    strings = _module_strings(tree)
    parents = _parents(tree)
    relative = path.relative_to(ROOT).as_posix()
    problems = []

    def key_problem(node: ast.AST, key: ast.AST | None, how: str) -> None:
        where = f"{relative}:{node.lineno} ({how})"
        if key is None:
            problems.append(f"{where}: reads the environment without a key")
            return
        if isinstance(key, ast.Name) and key.id in strings:
            key = ast.Constant(strings[key.id])
        texts = [n.value for n in ast.walk(key) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        if any(t.startswith(PREFIX) for t in texts):
            problems.append(f"{where}: reads {', '.join(t for t in texts if t.startswith(PREFIX))}")
        elif not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            if (relative, _enclosing_function(node, parents)) not in USER_NAMED_VARIABLES:
                problems.append(f"{where}: reads a variable whose name is computed")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ("environ", "getenv") for a in node.names):
            problems.append(f"{relative}:{node.lineno}: imports environ/getenv from os (use os.environ for writes)")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getenv" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
            key_problem(node, node.args[0] if node.args else None, "os.getenv")
        if not _is_environ(node):
            continue
        parent = parents[node]
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "dict":
            continue  # a copy for a child process
        if isinstance(parent, ast.Attribute):
            if parent.attr in ("copy", "update", "pop", "setdefault"):
                continue  # writes (setdefault: sets a variable a child process will read)
            call = parents.get(parent)
            if parent.attr == "get" and isinstance(call, ast.Call):
                key_problem(node, call.args[0] if call.args else None, "os.environ.get")
                continue
            problems.append(f"{relative}:{node.lineno}: os.environ.{parent.attr}")
            continue
        if isinstance(parent, ast.Subscript):
            if isinstance(parent.ctx, ast.Load):
                key_problem(node, parent.slice, "os.environ[...]")
            continue
        if isinstance(parent, ast.Compare):
            key_problem(node, parent.left, "in os.environ")
            continue
        if isinstance(parent, ast.IfExp) and isinstance(parents.get(parent), ast.Subscript) \
                and isinstance(parents[parent].ctx, ast.Store):
            continue  # (os.environ if environ is None else environ)[name] = value
        problems.append(f"{relative}:{node.lineno}: os.environ used as a value (an alias reads it elsewhere)")
    return problems


def test_only_settings_reads_welfare_exchange_variables():
    settings_path = PACKAGE / "settings.py"
    problems = []
    for path, tree in _sources("include", "dags", "plugins"):
        if path != settings_path:
            problems += _environment_reads(path, tree)
    assert problems == [], "read WELFARE_EXCHANGE_* variables through welfare_exchange.settings:\n" + "\n".join(problems)


def test_every_setting_has_one_default_in_settings():
    tree = ast.parse(settings_path_text := (PACKAGE / "settings.py").read_text())
    table = next(
        node.value for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "DEFAULTS"
    )
    keys = [k.value for k in table.keys]
    assert len(keys) == len(set(keys)), "a variable listed twice in DEFAULTS"
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith(PREFIX) and n.value.rstrip("_") == n.value and " " not in n.value}
    assert named <= set(keys), f"read without an entry in DEFAULTS: {sorted(named - set(keys))}"
    # The readers look the default up in the table: no reader takes a default of its own.
    assert "os.environ.get(name, " not in settings_path_text
    # Every variable the rest of the code names is one of them (or an intake limit).
    from welfare_exchange.intake.reader import IntakeLimits
    from welfare_exchange.settings import INTAKE_PREFIX

    known = set(keys) | {INTAKE_PREFIX + name.upper() for name in IntakeLimits().__dict__}
    unknown = set()
    for path, other in _sources("include", "dags", "plugins"):
        for n in ast.walk(other):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                for match in re.finditer(PREFIX + r"[A-Z0-9_]+", n.value):
                    if match.group().endswith("_") or n.value[match.end():match.end() + 1] in ("*", "<"):
                        continue  # a family of variables (WELFARE_EXCHANGE_INTAKE_*)
                    if match.group() not in known:
                        unknown.add(f"{path.relative_to(ROOT)}: {match.group()}")
    assert not unknown, "variables named in the code but not settings:\n" + "\n".join(sorted(unknown))
