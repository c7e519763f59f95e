"""``welfare-exchange entitlements import|generate``: fill the entitlement store.

Both print a one-line summary of counts on stdout — never a number from the data — and show a
progress bar only when stderr is a terminal.
"""

from __future__ import annotations

import argparse

from welfare_exchange.entitlements.generator import MAX_CHILDREN, generate
from welfare_exchange.entitlements.importer import import_csv
from welfare_exchange.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("entitlements", help="entitlement store: import or generate")
    commands = parser.add_subparsers(dest="entitlements_command", required=True, metavar="ACTION")

    imp = commands.add_parser(
        "import",
        help="import the agency's extract (full by default: what it lacks is withdrawn; --delta for a partial file)",
        description=(
            "Import FILE.csv into the entitlement store. Header: child_insz,child_birth_date,"
            "child_nis,beneficiary_insz,supplement,start_date,end_date, optionally followed by "
            "beneficiary_email,beneficiary_address_line,beneficiary_postcode,beneficiary_city. "
            "supplement is sociale_toeslag, zorgtoeslag or schooltoeslag; dates are YYYY-MM-DD; "
            "an empty end_date means ongoing. The file is the agency's FULL extract unless --delta: "
            "every current entitlement absent from it is withdrawn (its version closed, never deleted). "
            "Nothing is ever overwritten: a changed end date is a new version, and the store keeps "
            "what it knew when. Any bad row refuses the whole file (reported by line number), and so "
            "does a full extract that would withdraw more than WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT "
            "(5 %) of the current entitlements, unless --allow-shrink. Importing the same file twice "
            "changes nothing. Streams the file in constant memory, with progress on a terminal."
        ),
    )
    imp.add_argument("file", metavar="FILE.csv", help="the CSV file (UTF-8, comma-separated)")
    imp.add_argument("--delta", action="store_true",
                     help="the file is partial: only add and correct, withdraw nothing")
    imp.add_argument("--allow-shrink", action="store_true",
                     help="confirm a full extract that withdraws more than the allowed share of the entitlements")
    _progress_flags(imp)
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
    _progress_flags(gen)
    gen.set_defaults(handler=_generate)


def _progress_flags(parser: argparse.ArgumentParser) -> None:
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def _import(args: argparse.Namespace) -> int:
    if args.delta and args.allow_shrink:
        raise InputError("--allow-shrink confirms withdrawals by a full extract; a --delta import withdraws nothing")
    counts = import_csv(args.file, delta=args.delta, allow_shrink=args.allow_shrink, progress=args.progress)
    print(
        f"imported {counts['rows']} rows ({'delta' if args.delta else 'full extract'}): "
        f"{counts['children_new']} new and {counts['children_updated']} updated children, "
        f"{counts['beneficiaries_new']} new and {counts['beneficiaries_updated']} updated beneficiaries, "
        f"{counts['entitlements_new']} new, {counts['entitlements_updated']} updated, "
        f"{counts['entitlements_withdrawn']} withdrawn and {counts['entitlements_unchanged']} unchanged entitlements"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    counts = generate(args.children, args.seed, progress=args.progress)
    print(
        f"generated {counts['children']} children in {counts['families']} families, "
        f"{counts['beneficiaries']} beneficiaries, {counts['entitlements']} entitlements "
        f"({counts['entitlement_versions']} versions with their history) "
        f"({counts['sociale_toeslag_children']} children with a sociale toeslag) "
        f"in {counts['seconds']} s (seed {counts['seed']})"
    )
    return 0
