"""``airflow dag-processor``, with the project modules the DAG files import imported once, up front.

Airflow 3.3's DAG processor parses each DAG file in a child process forked from its manager, every
``[dag_processor] min_file_process_interval``. Before it forks, the manager imports the ``airflow.*``
modules the file names (``parsing_pre_import_modules``), so the child inherits them — but not the
project's: every parse imported ``welfare_exchange`` (the DAG factory, channels, sensors, the
database layer) all over again. Measured on 2 cores with 21 Method 1 protocols and the dev
interval of 5 s: the idle DAG processor used 38.5 CPU-seconds a minute, most of it those imports
(about 3 CPU-seconds per file against 0.25 s to build the DAGs), and took that from the exchanges
running beside it. With 285 protocols and Airflow's 30 s it still parses six files twice a minute.

This launcher does for the project's package what Airflow does for its own: it reads the DAG
files' imports (:func:`project_imports`, the same AST scan as Airflow's ``iter_airflow_imports``),
imports them, then runs Airflow's own ``dag-processor`` command in this process. The DAG objects
are still built in every parse (the registry snapshot is read then), so a signed protocol's DAG
appears as before. As with the preloading executor, restart the DAG processor after upgrading the
project's code.

Run it as ``python -m welfare_exchange.orchestration.dag_processor [dag-processor options]``: the
dev Airflow (:mod:`welfare_exchange.devtools.airflow_server`) and the compose file do.
"""

from __future__ import annotations

import ast
import importlib
import logging
import pathlib
import sys
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

#: The project's importable package: the imports of it that the DAG files name are preloaded.
PACKAGE = "welfare_exchange"


def project_imports(dag_files: Iterable[pathlib.Path]) -> Iterator[str]:
    """The ``welfare_exchange`` modules ``dag_files`` import (top level or not), each once, in order."""
    seen: set[str] = set()
    for path in dag_files:
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):  # Airflow reports a broken DAG file itself
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                if (name == PACKAGE or name.startswith(PACKAGE + ".")) and name not in seen:
                    seen.add(name)
                    yield name


def preload(dags_folder: pathlib.Path) -> list[str]:
    """Import the project modules the DAG files under ``dags_folder`` import; the names imported.

    A module that fails to import is left to the parse, which reports it as an import error of
    its DAG file in the UI (as Airflow's own pre-import does).
    """
    imported = []
    for name in project_imports(sorted(dags_folder.rglob("*.py"))):
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 — the parse shows the error where people look
            log.warning("not preloaded for the DAG processor: %s (%s)", name, type(err).__name__)
            continue
        imported.append(name)
    return imported


def main(argv: list[str] | None = None) -> int | None:
    """Preload, then ``airflow dag-processor`` with ``argv`` (default: this command's arguments)."""
    from airflow.configuration import conf

    preload(pathlib.Path(conf.get("core", "dags_folder")).expanduser())
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dag-processor", *(sys.argv[1:] if argv is None else argv)]
    return airflow_main()


if __name__ == "__main__":
    sys.exit(main())
