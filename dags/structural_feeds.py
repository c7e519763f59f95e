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

from airflow.sdk import CronDataIntervalTimetable, dag, task

from welfare_exchange.orchestration.defaults import default_args
from welfare_exchange.orchestration import feed_tasks as tasks
from welfare_exchange.orchestration.assets import ENTITLEMENT_SNAPSHOT
from welfare_exchange.feeds.config import TIMEZONE, get_feed_config
from welfare_exchange.orchestration.deadline import deadline_alert

config = get_feed_config()


@dag(
    dag_id="structural_feeds",
    dag_display_name="Structural feeds · all municipalities",
    description="Periodic delivery of sociale toeslag changes to municipalities with a structural protocol",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable(config.schedule, timezone=TIMEZONE),
    start_date=tasks.start_datetime(),
    catchup=config.catchup,
    max_active_runs=1,
    max_active_tasks=config.max_active_tasks,
    default_args=default_args(),
    deadline=deadline_alert(config) if config.deadline_alert else None,
    tags=["structural", "feed", "sftp"],
)
def structural_feeds():
    fresh = task.sensor(
        task_id="wait_for_fresh_snapshot", inlets=[ENTITLEMENT_SNAPSHOT], mode="reschedule", poke_interval=config.snapshot_poke.total_seconds(),
        timeout=config.snapshot_timeout.total_seconds(), retries=0,
    )(tasks.snapshot_is_fresh)()
    feeds = task(task_id="select_municipalities")(tasks.select_municipalities)()
    planned = task(task_id="detect_changes")(tasks.detect_changes)(feeds)
    delivered = task(task_id="deliver_feed", map_index_template="{{ feed_label }}")(tasks.deliver_feed).expand(feed=planned)
    summary = task(task_id="summarise_feeds", trigger_rule="all_done", retries=0)(tasks.summarise_feeds)(planned)
    fresh >> feeds
    delivered >> summary


structural_feeds()
