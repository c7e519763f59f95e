"""One rule, one place (issue 15 point 6), kept by reading the code (``ast``, nothing is run).

* **Retention deadlines** are computed by one function per kind of deadline: a function that adds
  ``timedelta(days=…)`` while reading a ``*_retention_days`` setting or protocol field is one of
  :data:`DEADLINE_FUNCTIONS`; a rule text quoting ``request_retention_days`` or
  ``result_retention_days`` is written only by the ledger's deadline functions.
* **Side effects** (begin → act → complete) go through ``ledger.side_effect``: the ledger's
  ``begin_side_effect``/``complete_side_effect`` are called directly only in :data:`DIRECT_EFFECTS`,
  each named, with why, in ``ledger.side_effect``'s docstring.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("include", "dags", "plugins")
LEDGER = "include/welfare_exchange/ledger.py"

#: The one function per retention deadline: (file, function).
DEADLINE_FUNCTIONS = {
    (LEDGER, "request_deadline"),  # what a municipality sent: request, feedback, inbox notice, rejected message
    (LEDGER, "result_deadline"),  # what the agency sent: result, report, feed, referral file, receipt
    ("include/welfare_exchange/retention/rules.py", "legal_limit"),  # the legal maximum of any deadline
    ("include/welfare_exchange/retention/runner.py", "audit_term"),  # the audit trail's term
}
PROTOCOL_FIELDS = {"request_retention_days", "result_retention_days"}

#: Where the ledger's begin/complete primitives are still called by hand: (file, function).
DIRECT_EFFECTS = {
    ("include/welfare_exchange/retention/runner.py", "_begin"),
    ("include/welfare_exchange/retention/runner.py", "_certify"),
    ("include/welfare_exchange/retention/runner.py", "_report_missing"),
    ("include/welfare_exchange/outreach/outbox.py", "begin"),
    ("include/welfare_exchange/outreach/outbox.py", "settle"),
    ("include/welfare_exchange/channels/sftp.py", "_record_delivery"),
    ("include/welfare_exchange/channels/smime.py", "fetch_request"),
    ("include/welfare_exchange/channels/smime.py", "take_inbound"),
    ("include/welfare_exchange/channels/sftp.py", "take_inbound"),
    ("include/welfare_exchange/channels/sftp.py", "quarantine_inbound"),
    ("include/welfare_exchange/outreach/resolution.py", "confirm"),
    ("include/welfare_exchange/outreach/resolution.py", "resend"),
}
PRIMITIVES = {"begin_side_effect", "complete_side_effect"}


def _sources():
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _functions(tree: ast.AST):
    """Every function with the nodes that are its own (not those of a function nested in it)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            own, todo = [], list(ast.iter_child_nodes(node))
            while todo:
                child = todo.pop()
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    continue
                own.append(child)
                todo.extend(ast.iter_child_nodes(child))
            yield node.name, own


def _name_of_call(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _adds_days(nodes) -> bool:
    return any(
        isinstance(n, ast.Call) and _name_of_call(n) == "timedelta"
        and (any(k.arg == "days" for k in n.keywords) or bool(n.args))
        for n in nodes
    )


def _reads_retention_days(nodes) -> bool:
    return any(
        (isinstance(n, ast.Attribute) and n.attr.endswith("retention_days"))
        or (isinstance(n, ast.Name) and n.id.endswith("retention_days"))
        for n in nodes
    )


def deadline_arithmetic(tree: ast.AST) -> set[str]:
    """Functions of ``tree`` that compute a retention deadline themselves."""
    return {name for name, nodes in _functions(tree) if _adds_days(nodes) and _reads_retention_days(nodes)}


def rule_texts(tree: ast.AST) -> set[str]:
    """Functions of ``tree`` that write a rule text quoting a protocol's retention days."""
    found = set()
    for name, nodes in _functions(tree):
        for n in nodes:
            if isinstance(n, ast.JoinedStr) and any(
                isinstance(v, ast.FormattedValue)
                and any(isinstance(a, ast.Attribute) and a.attr in PROTOCOL_FIELDS for a in ast.walk(v.value))
                for v in n.values
            ):
                found.add(name)
    return found


def direct_effects(tree: ast.AST) -> set[str]:
    return {
        name for name, nodes in _functions(tree)
        if any(isinstance(n, ast.Call) and _name_of_call(n) in PRIMITIVES for n in nodes)
    }


def test_the_detectors_see_what_they_look_for():
    sample = ast.parse(
        "def f(p, on):\n    return on + dt.timedelta(days=p.request_retention_days)\n"
        "def g(p, on):\n    days = p.result_retention_days\n    return on + timedelta(days=days), f'r: {days}'\n"
        "def h(p):\n    return f'result: {p.result_retention_days} days after the exchange'\n"
        "def k(s, key):\n    ledger.begin_side_effect(s, key, kind='x', exchange_id=None)\n"
        "def ok(on):\n    return on + dt.timedelta(days=1)\n"
    )
    assert deadline_arithmetic(sample) == {"f", "g"}
    assert rule_texts(sample) == {"h"}
    assert direct_effects(sample) == {"k"}


def test_each_retention_deadline_is_computed_by_its_one_function():
    found = {(path, name) for path, tree in _sources() for name in deadline_arithmetic(tree)}
    assert found - DEADLINE_FUNCTIONS == set(), (
        "retention deadline arithmetic outside the deadline functions: call ledger.request_deadline / "
        "ledger.result_deadline (or add one function for a new kind of deadline)"
    )
    assert DEADLINE_FUNCTIONS <= found | {(LEDGER, "request_deadline"), (LEDGER, "result_deadline")}


def test_rule_texts_come_from_the_deadline_functions():
    found = {(path, name) for path, tree in _sources() for name in rule_texts(tree)}
    assert found <= {(LEDGER, "request_deadline"), (LEDGER, "result_deadline")}, (
        "a retention rule text written by hand: take the rule ledger.request_deadline/result_deadline return"
    )


def test_begin_and_complete_are_called_directly_only_where_the_helper_says_why():
    found = {(path, name) for path, tree in _sources() if path != LEDGER for name in direct_effects(tree)}
    assert found == DIRECT_EFFECTS, (
        "ledger.begin_side_effect/complete_side_effect called by hand: use ledger.side_effect, or say in its "
        "docstring why it cannot be used here and list the function in DIRECT_EFFECTS"
    )
    ledger_tree = ast.parse((ROOT / LEDGER).read_text())
    helper = next(n for n in ast.walk(ledger_tree) if isinstance(n, ast.FunctionDef) and n.name == "side_effect")
    doc = ast.get_docstring(helper)
    for path, name in DIRECT_EFFECTS:
        module = path.removeprefix("include/welfare_exchange/")
        assert f"``{module}``" in doc and f"``{name}``" in doc, f"{path} {name} is not explained in ledger.side_effect"
