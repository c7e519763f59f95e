"""Every runbook step an alert or an error message can name exists in docs/RUNBOOK.md.

Alerts and error texts point to ``docs/RUNBOOK.md § '<section>'``; a pointer to a section that
does not exist leaves the operator alone at the worst moment.
"""

from __future__ import annotations

import re

from welfare_exchange import insz
from welfare_exchange import failures
from welfare_exchange.settings import REPO_ROOT

RUNBOOK = REPO_ROOT / "docs" / "RUNBOOK.md"
PROCEDURES = (
    "Re-run a failed exchange safely", "Rotate a protocol's key", "Onboard a municipality", "Revoke a protocol",
    "Answer a data-subject request", "Read the audit export", "Configure failure alerts",
)


def _headings() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{2,3} (.+)$", RUNBOOK.read_text(), re.MULTILINE)}


def test_every_section_named_by_a_failure_exists():
    named = {cause.section for cause in failures.CAUSES.values()} | set(failures.TASK_SECTIONS.values())
    missing = sorted(named - _headings())
    assert not missing, f"docs/RUNBOOK.md lacks the section(s): {missing}"


def test_every_cause_is_in_the_runbook_table():
    text = RUNBOOK.read_text()
    table = text[text.index("## Failures by cause"):]
    assert not [code for code in failures.CAUSES if f"| `{code}` |" not in table]


def test_every_runbook_pointer_in_the_code_exists():
    pointers = set()
    for path in (REPO_ROOT / "include").rglob("*.py"):
        pointers |= set(re.findall(r"RUNBOOK\.md § '([^']+)'", path.read_text()))
        pointers |= set(re.findall(r"runbook step '([^']+)'", path.read_text()))
    assert pointers, "no runbook pointers found: has the pointer format changed?"
    assert not sorted(pointers - _headings())


def test_the_procedures_are_there_and_free_of_personal_data():
    assert not sorted(set(PROCEDURES) - _headings())
    assert insz.find_insz_shaped(RUNBOOK.read_text()) == []
