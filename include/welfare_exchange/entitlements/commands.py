"""``welfare-exchange entitlements import|generate``: fill the entitlement store.

Both print a one-line summary of counts on stdout — never a number from the data — and show a
progress bar only when stderr is a terminal.
"""

from __future__ import annotations

import argparse

from welfare_exchange.entitlements.generator import MAX_CHILDREN, generate
from welfare_exchange.entitlements.store import import_csv


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("entitlements", help="entitlement store: import or generate")
    commands = parser.add_subparsers(dest="entitlements_command", required=True, metavar="ACTION")

    imp = commands.add_parser(
        "import",
        help="upsert entitlements from a CSV file (validated as a whole first)",
        description=(
            "Import FILE.csv into the entitlement store. Header: child_insz,child_birth_date,"
            "child_nis,beneficiary_insz,supplement,start_date,end_date, optionally followed by "
            "beneficiary_email,beneficiary_address_line,beneficiary_postcode,beneficiary_city. "
            "supplement is sociale_toeslag, zorgtoeslag or schooltoeslag; dates are YYYY-MM-DD; "
            "an empty end_date means ongoing. Any bad row refuses the whole file (reported by "
            "line number). Importing the same file twice changes nothing; a new end_date for "
            "the same child, beneficiary, supplement and start_date updates it."
        ),
    )
    imp.add_argument("file", metavar="FILE.csv", help="the CSV file (UTF-8, comma-separated)")
    imp.set_defaults(handler=_import)

    gen = commands.add_parser(
        "generate",
        help="REPLACE the entitlement store with synthetic data",
        description=(
            "Replace the entitlement store with a synthetic, Groeipakket-like one: all children, "
            "beneficiaries and entitlements in the project database are deleted first (in one "
            "transaction with the new data). Deterministic: the same --children and --seed give "
            "the same data."
        ),
    )
    gen.add_argument("--children", type=int, required=True, metavar="N", help=f"number of children (1..{MAX_CHILDREN:,})")
    gen.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    bar = gen.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    gen.set_defaults(handler=_generate)


def _import(args: argparse.Namespace) -> int:
    counts = import_csv(args.file)
    print(
        f"imported {counts['rows']} rows: "
        f"{counts['children_new']} new and {counts['children_updated']} updated children, "
        f"{counts['beneficiaries_new']} new and {counts['beneficiaries_updated']} updated beneficiaries, "
        f"{counts['entitlements_new']} new, {counts['entitlements_updated']} updated and "
        f"{counts['entitlements_unchanged']} unchanged entitlements"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    counts = generate(args.children, args.seed, progress=args.progress)
    print(
        f"generated {counts['children']} children in {counts['families']} families, "
        f"{counts['beneficiaries']} beneficiaries, {counts['entitlements']} entitlements "
        f"({counts['sociale_toeslag_children']} children with a sociale toeslag) "
        f"in {counts['seconds']} s (seed {counts['seed']})"
    )
    return 0
