"""welfare-exchange: lawful, audited exchange of Groeipakket data with Flemish municipalities.

All logic lives in this package; the Airflow DAG files in ``dags/`` only wire it together.
"""

__version__ = "0.1.0"
