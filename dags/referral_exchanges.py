"""Referral to the Sociaal Huis: two Airflow DAGs per signed referral agreement in the registry.

``referral_…`` sends the encrypted referral list (weekly by default) and withdrawal notices;
``referral_feedback_…`` receives the Sociaal Huis's feedback and writes the evaluation report.
Built from the registry snapshot file, never from a database query: see
``welfare_exchange.orchestration.referral_dag``.
"""

from welfare_exchange.orchestration.referral_dag import referral_dags

globals().update(referral_dags())
