"""### Structural feeds — the monthly Groeipakket changes for every municipality with a standing protocol

Every data interval (a calendar month by default, `WELFARE_EXCHANGE_FEED_SCHEDULE`), each
municipality with a signed `structural` protocol receives, encrypted with the key agreed
between the two DPOs, what the agency recorded during that interval about its children's
*sociale toeslag*, whatever the valid dates: **nieuw**, **beëindigd**, **begunstigde
gewijzigd**, **onderbroken**, **ingetrokken** — decisions with retroactive effect marked
*met terugwerkende kracht*. The store is read as it was known at the interval's start and end,
so a back-fill gives the same file however much was recorded since.

| task | what it guarantees |
|---|---|
| `wait_for_fresh_snapshot` | the entitlement store was refreshed (Asset `entitlement_snapshot`) after the interval ended |
| `select_municipalities` | the registry is read when the run runs, never at parse time |
| `detect_changes` | one set query for all municipalities; one exchange per (protocol, interval) |
| `deliver_feed` (one per municipality) | gate again, built once, `.part` upload + rename, verified, delivered once; retention recorded |
| `summarise_feeds` | runs whatever happened upstream; counts, deadline check; fails if any municipality is undelivered |

Keyed on the data interval: a re-run, catch-up or `airflow backfill create` of a month re-sends
the very same file, never twice. One municipality's failure never blocks the others: clear its
`deliver_feed` task once fixed. A feed not delivered `WELFARE_EXCHANGE_FEED_DEADLINE_HOURS`
after its interval ends raises a Deadline Alert and a `feed.deadline_missed` audit record.
See `docs/structural_feeds.md`. No personal data appears in logs, XCom or the run configuration.
"""

from welfare_exchange.orchestration.feeds_dag import build_structural_feeds_dag


def structural_feeds():
    """The DAG, built again from the current settings (what the tests call)."""
    return build_structural_feeds_dag(doc_md=__doc__)


structural_feeds_dag = structural_feeds()
