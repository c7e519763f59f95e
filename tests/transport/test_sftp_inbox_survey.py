"""The inbox classifier (pure): what is a request to take, what must be answered, what to wait for."""

from __future__ import annotations

from welfare_exchange.transport import sftp as transport

NOW = 1_800_000_000


def _file(name: str, size: int = 100, age: int = 60) -> transport.RemoteFile:
    return transport.RemoteFile(name=name, size=size, mtime=NOW - age, directory="inbox")


def _classify(files, first=None, **kwargs) -> transport.InboxSurvey:
    return transport.classify_inbox(transport.look_of(files) if first is None else first, files, now=NOW,
                                    max_bytes=1000, stale_after=3600, **kwargs)


def test_settled_requests_are_ready_oldest_first_and_everything_else_is_sorted_by_what_to_do():
    files = [_file("b.xlsx", age=10), _file("A.XLS", age=20), _file(".aanvraag.xlsx"), _file("lijst.csv"),
             _file("groot.xlsx", size=5000), _file("oud.xlsx.filepart", age=7200), _file("bezig.xlsx.part", age=5),
             _file("~$aanvraag.xlsx", age=30), _file(".~lock.aanvraag.xlsx#", age=30)]

    survey = _classify(files)

    assert [f.name for f in survey.ready] == ["A.XLS", "b.xlsx"]
    assert [f.name for f in survey.oversized] == ["groot.xlsx"]
    assert sorted(f.name for f in survey.strays) == [".aanvraag.xlsx", "lijst.csv"]
    assert [f.name for f in survey.stale_uploads] == ["oud.xlsx.filepart"]
    assert survey.waiting == 3  # the fresh .part and the two lock files
    assert survey.actionable and len(survey.unanswered) == 4


def test_a_file_that_changed_between_the_looks_is_not_settled_whatever_its_name():
    first = transport.look_of([_file("a.xlsx", size=10), _file(".x", size=1), _file("old.part", size=1, age=7200)])
    now = [_file("a.xlsx", size=20), _file(".x", size=2), _file("old.part", size=2, age=7200)]

    survey = _classify(now, first=first)

    assert survey.ready == survey.strays == survey.stale_uploads == [] and survey.waiting == 3
    assert not survey.actionable


def test_only_something_that_can_settle_needs_a_second_look():
    assert not transport.needs_second_look([], now=NOW)
    assert not transport.needs_second_look([_file("a.part", age=5), _file("~$a.xlsx")], stale_after=3600, now=NOW)
    assert transport.needs_second_look([_file("a.part", age=7200)], stale_after=3600, now=NOW)
    assert transport.needs_second_look([_file(".hidden")], now=NOW)


def test_a_look_names_files_by_handle_only():
    look = transport.look_of([_file("aanvraag_jansens.xlsx", size=7)])
    assert look == {transport.name_handle("aanvraag_jansens.xlsx"): (7, NOW - 60)}
