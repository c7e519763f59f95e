"""Data subjects' rights: access (art. 15 GDPR), rectification and erasure (art. 16–17).

* :mod:`~welfare_exchange.subjects.access` — which exchanges included a person, found through
  the audit trail's keyed-HMAC subject references;
* :mod:`~welfare_exchange.subjects.erasure` — remove a person from what this system still holds
  and say what cannot be erased and why;
* :mod:`~welfare_exchange.subjects.commands` — ``welfare-exchange subject-access`` and
  ``subject-erase``. INSZ numbers come from a file and are never printed.
"""

from welfare_exchange.subjects.access import subject_access
from welfare_exchange.subjects.erasure import erase_subject
from welfare_exchange.subjects.persons import read_insz_file

__all__ = ["erase_subject", "read_insz_file", "subject_access"]
