"""The exchanges themselves: the steps of Method 1 (and the shared pieces of the others).

* :mod:`.steps` — each step of a Method 1 exchange as a plain function (tested without Airflow);
* :mod:`.matching` — the set join against the entitlement store;
* :mod:`.result` — the result workbook, encrypted with the protocol's key;
* :mod:`.dag_factory` — builds one Method 1 DAG per protocol from the registry snapshot;
* :mod:`.defaults` — default task arguments and the failure callback, in one place.
"""
