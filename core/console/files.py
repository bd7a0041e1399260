"""The Files page's query: the ledger, most recently updated first, filtered and paged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from core.console.backend import LedgerView
from core.ops.event_messages import iso_now
from core.ops.replay import incoming_key, parse_duration
from core.pipeline.ledger import ALL_STATUSES, LedgerEntry, Status

PAGE_SIZE = 50
TIE_SLACK = 10  # entries sharing the last shown one's update time, read again


def page_number(params: Mapping[str, str], name: str = "page") -> int:
    """A page number from the query string: 0 for anything that is not a whole number >= 0."""
    try:
        return max(int(params.get(name, "0") or 0), 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Filters:
    status: str = ""
    key: str = ""
    since: str = ""  # a duration: 30m, 2h, 7d
    after: str = ""  # where the previous page ended: "<updated_at>|<file_id>"
    page: int = 0  # only for the page number shown

    @classmethod
    def parse(cls, params: dict[str, str]) -> Filters:
        """From query parameters; raises ValueError (ReplayError) with a readable message."""
        status = params.get("status", "").strip().upper()
        if status and status not in {s.value for s in ALL_STATUSES}:
            raise ValueError(f"unknown status {status!r}")
        since = params.get("since", "").strip()
        if since:
            parse_duration(since)
        after = params.get("after", "")
        if after and "|" not in after:
            after = ""
        page = page_number(params) if after else 0
        return cls(status, params.get("key", "").strip(), since, after, page)

    def query(self, **changes: object) -> dict[str, str]:
        values = {
            "status": self.status,
            "key": self.key,
            "since": self.since,
            "after": self.after,
            "page": self.page,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", 0, None)}

    def next_page(self, last: LedgerEntry) -> dict[str, str]:
        return self.query(after=f"{last.updated_at}|{last.file_id}", page=self.page + 1)


def ledger_page(
    ledger: LedgerView,
    bucket: str,
    filters: Filters,
    *,
    size: int = PAGE_SIZE,
    now: datetime | None = None,
) -> tuple[list[LedgerEntry], bool]:
    """One page of entries, newest update first, and whether another follows.

    A page starts where the previous one ended (``after``), so each page reads about as much
    as it shows, however deep. Entries updated in the same millisecond as the last one shown
    are read again and skipped, hence a little more than one page is asked for.
    """
    until, after = None, None
    if filters.after:
        until, _, last_id = filters.after.partition("|")
        after = (until, last_id)
    since = (
        iso_now((now or datetime.now(UTC)) - parse_duration(filters.since))
        if filters.since
        else None
    )
    want = size + 1 + TIE_SLACK
    if filters.key:
        entries = [
            e
            for e in ledger.for_key(bucket, incoming_key(filters.key))
            if (not filters.status or e.status == filters.status)
            and (since is None or e.updated_at >= since)
        ]
    elif filters.status:
        entries = ledger.by_status(Status(filters.status), since, limit=want, until=until)
    elif since is not None:
        entries = [
            e for s in ALL_STATUSES for e in ledger.by_status(s, since, limit=want, until=until)
        ]
    else:
        entries = ledger.recent(want, until=until)
    entries = sorted(entries, key=lambda e: (e.updated_at, e.file_id), reverse=True)
    if after is not None:
        entries = [e for e in entries if (e.updated_at, e.file_id) < after]
    return entries[:size], len(entries) > size


def progress(entry: LedgerEntry) -> tuple[int | None, int | None]:
    """Rows judged and written so far, for a PROCESSING file (None until ingest reports any).

    Read defensively: entries written before ingest counted progress have neither field.
    """
    judged = getattr(entry, "rows_judged", None)
    written = getattr(entry, "rows_written", None)
    if not isinstance(judged, int) or judged <= 0:
        return None, None
    return judged, written if isinstance(written, int) else None
