"""The structure docs/ARCHITECTURE.md describes, kept by reading the code (``ast``, nothing is run).

* One settings module: only ``welfare_exchange/settings.py`` reads ``WELFARE_EXCHANGE_*`` variables,
  each listed once with its one default. Devtools and the demo may *set* variables for the
  processes they start.
* No import cycle, between modules or between packages, every import counted (function-level and
  ``TYPE_CHECKING`` ones too); a lower layer never imports a higher one.
* Only ``welfare_exchange.orchestration`` (and the devtools that start Airflow) imports Airflow.
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
    assert not re.search(r'_raw\("[A-Z_]+"\) or "[^"]', settings_path_text), "a reader repeats a default of DEFAULTS"
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


# ---------------------------------------------------------------------------------------- imports

#: The layers of docs/ARCHITECTURE.md, lowest first: a module imports only from its own layer or below.
#: Orchestration (the Airflow adapter) sits under the entry points: the CLI and the Exchanges view
#: reach Airflow (its REST API, its login, its connections) through it, and it imports none of them.
LAYERS: list[tuple[str, set[str]]] = [
    ("kernel", {"settings", "errors", "runinfo", "insz", "xlsx", "untrusted", "connections", "cliutil",
                 "municipalities", "failures"}),
    ("infrastructure", {"db", "staging", "transport"}),
    ("records", {"audit", "ledger", "protocols", "exchange_state"}),
    ("domain services", {"intake", "entitlements", "channels"}),
    ("exchanges", {"exchange", "outreach", "feeds", "retention", "subjects", "referral", "alerts"}),
    ("orchestration", {"orchestration"}),
    ("entry points", {"cli", "ui", "devtools"}),
]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of welfare_exchange it imports``, every import counted (function-level
    and ``TYPE_CHECKING`` ones too: a lazy import that hides a cycle is still a cycle)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" in path.parts or "migrations" in path.parts:
            continue
        modules[_module_name(path)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # ``from pkg import module`` imports that module; ``from module import name``, the module.
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in found:
                # the longest known module the import names (``from pkg import module`` or ``import pkg.mod``)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("welfare_exchange"):
                    targets.add(target)
        graph[name] = targets
    return graph


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of nodes that reach each other (only groups of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def unit_of(module: str) -> str:
    """The package or top-level module a module belongs to (``exchange``, ``settings``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for source, targets in graph.items():
        packages.setdefault(unit_of(source), set()).update(
            unit_of(t) for t in targets if unit_of(t) != unit_of(source) and "." in t
        )
    return packages


def layer_of(unit: str) -> int:
    for number, (_, members) in enumerate(LAYERS):
        if unit in members:
            return number
    raise AssertionError(f"welfare_exchange.{unit} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def test_no_import_cycle_between_modules():
    cycles = _strongly_connected(import_graph())
    assert cycles == [], "modules that import each other (directly or round about):\n" + "\n".join(map(str, cycles))


def test_no_import_cycle_between_packages():
    cycles = _strongly_connected(package_graph(import_graph()))
    assert cycles == [], "packages that import each other (directly or round about):\n" + "\n".join(map(str, cycles))


def test_a_lower_layer_never_imports_a_higher_one():
    wrong = []
    for source, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            if "." in source and "." in target and layer_of(unit_of(target)) > layer_of(unit_of(source)):
                wrong.append(f"{source} ({LAYERS[layer_of(unit_of(source))][0]}) imports {target} "
                             f"({LAYERS[layer_of(unit_of(target))][0]})")
    assert wrong == [], "imports that go up a layer:\n" + "\n".join(wrong)


# ---------------------------------------------------------------------------------------- Airflow

#: Outside orchestration, only these may import Airflow: they start and drive an Airflow server
#: for tests and the demo (its CLI, its configuration), they run no step.
AIRFLOW_ALLOWED = {"welfare_exchange.devtools.airflow_server"}


def _airflow_imports(path: pathlib.Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        if any(name == "airflow" or name.startswith("airflow.") for name in names):
            lines.append(node.lineno)
    return lines


def test_only_orchestration_imports_airflow():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module.startswith("welfare_exchange.orchestration") or module in AIRFLOW_ALLOWED:
            continue
        wrong += [f"{path.relative_to(ROOT)}:{line}" for line in _airflow_imports(path)]
    assert wrong == [], "Airflow imported outside welfare_exchange.orchestration:\n" + "\n".join(wrong)


def test_orchestration_does_import_airflow():
    """The scan sees Airflow imports at all (a test that cannot fail proves nothing)."""
    assert _airflow_imports(PACKAGE / "orchestration" / "dag_factory.py")


def test_docs_architecture_lists_the_layers_this_test_keeps():
    """docs/ARCHITECTURE.md's table names the same modules, in the same layers, as LAYERS."""
    table = {}
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].isdigit():
            modules = re.sub(r"\([^)]*\)", "", cells[2])
            table[cells[1]] = {m.removesuffix(".py").rstrip("/") for m in re.findall(r"`([^`]+)`", modules)}
    assert table == dict(LAYERS)
    assert set().union(*table.values()) >= {unit_of(m) for m in import_graph() if "." in m}


def test_connections_are_read_only_in_hooks():
    """``get_connection`` (Airflow's reader) appears only under orchestration/hooks/: the logic asks
    :mod:`welfare_exchange.connections` for a plain connection."""
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "hooks" in path.relative_to(PACKAGE).parts[:2]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "get_connection":
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert readers == [], "connections read outside orchestration/hooks:\n" + "\n".join(readers)
    hooks = (PACKAGE / "orchestration" / "hooks" / "airflow_connections.py").read_text()
    assert "get_connection" in hooks  # the scan looks at the right thing
