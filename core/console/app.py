"""The console's web app: routes, rendering, and the one place failures become messages."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from core.console.backend import QUEUE_NAMES, Backend, alerts_or_reason
from core.console.errors import readable
from core.console.file_detail import find_email, rejects_key_for, rejects_page, timeline
from core.console.files import Filters, ledger_page, page_number, progress
from core.console.security import CSRF_FIELD, Guard, Secrets, csrf_form
from core.ops.alerts import AlertsError
from core.ops.dlq import DeadLetter, DlqError, Unredrivable, reached_dlq_estimate
from core.ops.event_messages import parse_iso
from core.ops.replay import ReplayError, Selection
from core.ops.upload import UploadError, is_final, plan
from core.pipeline.email_report import version_text
from core.pipeline.ledger import ALL_STATUSES, LedgerEntry
from core.validation.verdict import word
from core.validation.visible import visible

log = logging.getLogger("orderpipe.console")
PEEK_TTL_S = 15.0  # a DLQ peek hides messages briefly: reuse one (any action drops it)
DLQ_PAGE = 50
HEALTH_PEEK = 100  # SQS keeps no order: the oldest of the first 100 seen stands for the queue
REJECTS_PAGE = 50
STATIC = Path(__file__).parent / "static"


@dataclass
class _Peeks:
    """The last peek of each DLQ, reused for a few seconds and dropped after any action.

    SQS has no offsets: page N of a DLQ needs the first (N + 1) × 50 messages received. A peek
    of more than was asked for before serves every smaller page.
    """

    held: dict[str, tuple[float, int, list[DeadLetter]]] = field(default_factory=dict)

    def get(self, backend: Backend, queue: str, want: int) -> list[DeadLetter]:
        hit = self.held.get(queue)
        if hit is not None and time.monotonic() - hit[0] < PEEK_TTL_S:
            asked, letters = hit[1], hit[2]
            if asked >= want or len(letters) < asked:  # enough, or all there is
                return letters
        letters = backend.dlq(queue).peek(want)
        self.held[queue] = (time.monotonic(), want, letters)  # fresh from when it ended
        return letters

    def drop(self, queue: str) -> None:
        self.held.pop(queue, None)


def _fmt_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        seconds = (datetime.now(UTC) - parse_iso(iso)).total_seconds()
    except ValueError:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def _shown(value: Any) -> Any:
    """Every text a page prints, with what would act (controls, bidi overrides) made visible;
    autoescaping then takes care of markup."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def _multiline(text: str) -> Markup:
    """Text whose line ends are its layout (an e-mail body): each line made visible."""
    return Markup("\n").join(escape(visible(line)) for line in text.splitlines())


def _download_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key).name) or "rejects.csv"


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{code} ×{n:,}" for code, n in sorted(reasons.items(), key=lambda kv: -kv[1]))


def build_app(
    backend: Backend,
    *,
    keys: Secrets | None = None,
    read_only: bool = False,
    hosts: frozenset[str] | None = None,
) -> Starlette:
    """The console over ``backend``; ``hosts`` are the Host headers it answers (None: any)."""
    keys = keys or Secrets()
    env = Environment(
        loader=PackageLoader("core.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_shown,
    )
    env.filters["multiline"] = _multiline
    env.filters["time"] = _fmt_time
    env.filters["age"] = _age
    env.filters["reasons"] = _reasons_text
    env.filters["word"] = word  # the outcome words every command and the email use
    env.filters["version"] = version_text  # "ETag …, no S3 version id", as the email says
    env.globals.update(
        read_only=read_only,
        csrf_field=CSRF_FIELD,
        csrf=keys.csrf,
        where=backend.where,
        statuses=[s.value for s in ALL_STATUSES],
        queues=QUEUE_NAMES,
        progress=progress,
        urlencode=urlencode,
    )
    peeks = _Peeks()
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="console")  # boto3 clients are
    # thread-safe; per-row lookups and the health page's sources run side by side

    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(path=request.url.path, **ctx)
        return HTMLResponse(html, status_code=status_code)

    async def action_form(request: Request) -> Any:
        if read_only:
            raise HTTPException(403, "the console is read-only (--read-only)")
        return await csrf_form(request, keys)

    # ---- Files --------------------------------------------------------------------------

    def files_context(request: Request) -> dict[str, Any]:
        try:
            filters = Filters.parse(dict(request.query_params))
        except ValueError as exc:
            return {"filters": Filters(), "entries": [], "more": False, "problem": str(exc)}
        entries, more = ledger_page(backend.ledger, backend.bucket, filters)
        return {"filters": filters, "entries": entries, "more": more, "problem": None}

    def files(request: Request) -> Response:
        return render(request, "files.html", **files_context(request))

    def file_rows(request: Request) -> Response:
        return render(request, "_file_rows.html", **files_context(request))

    def entry_or_404(request: Request) -> LedgerEntry:
        file_id = request.query_params.get("id", "")
        entry = backend.ledger.get(file_id) if file_id else None
        if entry is None:
            raise HTTPException(404, "no such file in the ledger")
        return entry

    def file_page(request: Request) -> Response:
        entry = entry_or_404(request)
        rpage = page_number(request.query_params, "rpage")
        rejects = None
        rejects_problem = None
        if entry.invalid:
            try:
                rejects = rejects_page(
                    backend.objects.lines(rejects_key_for(entry.object_key)),
                    rpage * REJECTS_PAGE,
                    REJECTS_PAGE,
                )
            except (ClientError, BotoCoreError) as exc:
                rejects_problem = f"cannot read the rejects CSV: {readable(exc)}"
        raw = backend.raw_item(entry.file_id) or {}
        email = find_email(backend.outbox, entry)
        reasons = sorted(entry.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return render(
            request,
            "file.html",
            entry=entry,
            reasons=reasons,
            reasons_max=max((n for _, n in reasons), default=0),
            rejects=rejects,
            rejects_problem=rejects_problem,
            rpage=rpage,
            rejects_page_size=REJECTS_PAGE,
            email=email,
            notify_error=raw.get("notify_error"),
            timeline=timeline(entry),
            versions=backend.ledger.for_key(entry.bucket, entry.object_key),
        )

    def rejects_csv(request: Request) -> Response:
        entry = entry_or_404(request)
        key = rejects_key_for(entry.object_key)
        lines = backend.objects.lines(key)
        first_chunk = next(lines, b"")  # fail here, as a page, if the object is missing
        name = _download_name(key)

        def body() -> Any:
            yield first_chunk
            yield from lines

        return StreamingResponse(
            body(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    def email_frame(request: Request) -> Response:
        entry = entry_or_404(request)
        email = find_email(backend.outbox, entry)
        if email is None or email.html is None:
            raise HTTPException(404, "no e-mail recorded for this file")
        response = HTMLResponse(email.html)
        # Shown inside a sandboxed frame of the file page: no script, no outside fetches.
        response.headers["content-security-policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
            "frame-ancestors 'self'; sandbox"
        )
        response.headers["x-frame-options"] = "SAMEORIGIN"
        return response

    # ---- Replay -------------------------------------------------------------------------

    def replay_preview(request: Request) -> Response:
        key = request.query_params.get("key", "")
        force = request.query_params.get("force") == "1"
        try:
            items = backend.replayer.plan(Selection(keys=(key,), force=force))
        except ReplayError as exc:
            raise HTTPException(400, str(exc)) from None
        return render(request, "replay.html", key=key, force=force, items=items, done=False)

    async def replay_run(request: Request) -> Response:
        form = await action_form(request)
        key = str(form.get("key", ""))
        force = form.get("force") == "1"
        reason = str(form.get("reason") or "replay from the console")[:200]

        def go() -> list[Any]:
            items = backend.replayer.plan(Selection(keys=(key,), force=force))
            return backend.replayer.run(items, reason=reason)

        try:
            items = await run_in_threadpool(go)
        except ReplayError as exc:
            raise HTTPException(400, str(exc)) from None
        return render(request, "replay.html", key=key, force=force, items=items, done=True)

    # ---- Upload -------------------------------------------------------------------------

    def follow_context(request: Request) -> dict[str, Any]:
        primary = request.query_params.getlist("f")
        alternate = request.query_params.getlist("g")
        rows = []
        for n, file_id in enumerate(primary[:50]):
            other = alternate[n] if n < len(alternate) else file_id
            entry = backend.ledger.get(file_id) or (
                backend.ledger.get(other) if other != file_id else None
            )
            key = file_id.split("/", 1)[-1].rsplit("#", 1)[0]
            rows.append(
                {"key": key, "entry": entry, "final": entry is not None and is_final(entry)}
            )
        return {
            "rows": rows,
            "following": bool(rows),
            "all_final": all(r["final"] for r in rows),
            "request_query": str(request.query_params),
        }

    def upload_page(request: Request) -> Response:
        return render(request, "upload.html", **follow_context(request))

    def upload_rows(request: Request) -> Response:
        return render(request, "_upload_rows.html", **follow_context(request))

    async def upload_post(request: Request) -> Response:
        form = await action_form(request)
        prefix = str(form.get("prefix") or "").strip()
        uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
        if not uploads:
            raise HTTPException(400, "choose or drop at least one file")
        with tempfile.TemporaryDirectory(prefix="orderpipe-console-") as tmp:
            paths = []
            for upload in uploads:
                name = Path(str(upload.filename)).name
                if not name or name.startswith("."):
                    raise HTTPException(400, f"not a file name: {upload.filename!r}")
                path = Path(tmp) / name
                with path.open("wb") as out:  # the part is spooled to disk: copy, never load
                    await run_in_threadpool(shutil.copyfileobj, upload.file, out, 1 << 20)
                paths.append(path)
            try:
                pairs = plan(paths, prefix)
                sent = await run_in_threadpool(
                    lambda: [backend.uploader.put(path, key) for path, key in pairs]
                )
            except UploadError as exc:
                raise HTTPException(400, str(exc)) from None
        query = [("f", u.file_ids[0]) for u in sent] + [("g", u.file_ids[-1]) for u in sent]
        return RedirectResponse(f"/upload?{urlencode(query)}", status_code=303)

    # ---- Dead letters -------------------------------------------------------------------

    def queue_of(request: Request) -> str:
        queue = request.query_params.get("queue", "ingest")
        if queue not in QUEUE_NAMES:
            raise HTTPException(404, "no such queue")
        return queue

    def letter_row(queue: str, letter: DeadLetter, visibility_s: int) -> dict[str, Any]:
        files = letter.files()
        entries = [backend.ledger.get(f.file_id) for f in files]
        if queue == "notify":  # notify keeps its own error on the item, outside LedgerEntry
            raws = [backend.raw_item(f.file_id) or {} for f in files]
            errors = [str(r["notify_error"]) for r in raws if r.get("notify_error")]
        else:
            errors = [e.last_error for e in entries if e is not None and e.last_error]
        failed_at = max(
            (e.updated_at for e in entries if e is not None and e.status == "FAILED"),
            default=None,
        )

        return {
            "letter": letter,
            "files": files,
            "entries": entries,
            "error": errors[0] if errors else None,
            "reached": reached_dlq_estimate(
                letter, failed_at if queue == "ingest" else None, visibility_s
            ),
            "never": Unredrivable(queue, lambda f: backend.objects.exists(f.key)).reason(letter),
        }

    def dead_letters(request: Request) -> Response:
        queue = queue_of(request)
        page = page_number(request.query_params)
        letters = peeks.get(backend, queue, (page + 1) * DLQ_PAGE + 1)
        dlq = backend.dlq(queue)
        visibility = dlq.source_visibility_s()
        shown = letters[page * DLQ_PAGE : (page + 1) * DLQ_PAGE]
        more = len(letters) > (page + 1) * DLQ_PAGE
        return render(
            request,
            "deadletters.html",
            queue=queue,
            total=dlq.depth() if more else len(letters),
            page=page,
            more=more,
            rows=list(pool.map(lambda m: letter_row(queue, m, visibility), shown)),
            notice=request.query_params.get("notice"),
        )

    def dead_letter(request: Request) -> Response:
        queue = queue_of(request)
        message_id = request.query_params.get("id", "")
        letters = peeks.get(backend, queue, DLQ_PAGE + 1)  # the page it was picked from, cached
        letter = next((m for m in letters if m.message_id == message_id), None)
        if letter is None:
            letter = backend.dlq(queue).find(message_id)
        if letter is None:
            raise HTTPException(404, f"no message {message_id} in the {queue} dead-letter queue")
        row = letter_row(queue, letter, backend.dlq(queue).source_visibility_s())
        history = {f.key: backend.ledger.for_key(f.bucket, f.key) for f in letter.files()}
        try:  # laid out as `orderpipe dlq show` does
            body = json.dumps(json.loads(letter.body), indent=2, ensure_ascii=False)
        except ValueError:
            body = letter.body
        return render(request, "deadletter.html", queue=queue, row=row, history=history, body=body)

    async def redrive(request: Request) -> Response:
        form = await action_form(request)
        queue = str(form.get("queue", ""))
        if queue not in QUEUE_NAMES:
            raise HTTPException(400, "no such queue")
        ids = {str(i) for i in form.getlist("ids")}
        everything = form.get("all") == "1"
        if not everything and not ids:
            raise HTTPException(400, "select the messages to redrive, or redrive all")
        dlq = backend.dlq(queue)

        # Left in the DLQ, as `orderpipe dlq redrive` leaves them; each object looked up once.
        hopeless = Unredrivable(queue, lambda f: backend.objects.exists(f.key))
        result = await run_in_threadpool(
            lambda: dlq.redrive(cannot_succeed=hopeless) if everything else dlq.redrive_ids(ids)
        )
        peeks.drop(queue)
        notice = f"moved {result.moved} message(s) back to the {queue} queue"
        if result.left:
            notice += f"; left {len(result.left)} that can never succeed"
        if result.failed or result.errors:
            notice += f"; {result.failed} not moved: {'; '.join(result.errors)[:300]}"
        return RedirectResponse(
            f"/dlq?{urlencode({'queue': queue, 'notice': notice})}", status_code=303
        )

    def purge_confirm(request: Request) -> Response:
        queue = queue_of(request)
        if read_only:
            raise HTTPException(403, "the console is read-only (--read-only)")
        count = backend.dlq(queue).purge(dry_run=True)
        return render(request, "purge.html", queue=queue, count=count)

    async def purge(request: Request) -> Response:
        form = await action_form(request)
        queue = str(form.get("queue", ""))
        if queue not in QUEUE_NAMES:
            raise HTTPException(400, "no such queue")
        if form.get("confirm") != queue:
            raise HTTPException(400, f"type the queue name ({queue}) to confirm the purge")
        deleted = await run_in_threadpool(lambda: backend.dlq(queue).purge())
        peeks.drop(queue)
        notice = f"deleted {deleted} message(s) from the {queue} dead-letter queue"
        return RedirectResponse(
            f"/dlq?{urlencode({'queue': queue, 'notice': notice})}", status_code=303
        )

    # ---- Health -------------------------------------------------------------------------

    def health(request: Request) -> Response:
        def dlq_card(queue: str) -> dict[str, Any]:
            count = backend.dlq(queue).depth()
            letters = peeks.get(backend, queue, HEALTH_PEEK) if count else []
            oldest = min((m.sent_at for m in letters if m.sent_at), default=None)
            return {
                "queue": queue,
                "count": count,
                "oldest": oldest,
                "all_seen": count <= len(letters),
            }

        # Each source answers on its own (an empty queue's peek waits a second): ask at once.
        depths = pool.submit(backend.queue_depths)
        dlqs = [pool.submit(dlq_card, q) for q in QUEUE_NAMES]
        alerts = pool.submit(alerts_or_reason, backend.alerts)
        reconcile = pool.submit(backend.last_reconcile)
        recent, alerts_note = alerts.result()
        return render(
            request,
            "health.html",
            depths=depths.result(),
            dlqs=[d.result() for d in dlqs],
            alerts=recent[-20:][::-1],
            alerts_note=alerts_note,
            reconcile=reconcile.result(),
        )

    # ---- errors -------------------------------------------------------------------------

    def failure(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
        elif isinstance(exc, (ClientError, BotoCoreError)):
            status, message = 502, readable(exc)
        elif isinstance(exc, (DlqError, AlertsError, UploadError, ReplayError, ValueError)):
            status, message = 400, readable(exc)
        else:
            log.error("console error on %s", request.url.path, exc_info=exc)
            status, message = 500, "something went wrong inside the console; see its terminal"
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="problem">{_escape(message)}</p>', status_code=200)
        return render(request, "error.html", status_code=status, message=message)

    async def index(request: Request) -> Response:
        return RedirectResponse("/files", status_code=303)

    routes = [
        Route("/", index),
        Route("/files", files),
        Route("/files/rows", file_rows),
        Route("/file", file_page),
        Route("/file/rejects.csv", rejects_csv),
        Route("/file/email", email_frame),
        Route("/replay", replay_preview, methods=["GET"]),
        Route("/replay", replay_run, methods=["POST"]),
        Route("/upload", upload_page, methods=["GET"]),
        Route("/upload", upload_post, methods=["POST"]),
        Route("/upload/rows", upload_rows),
        Route("/dlq", dead_letters),
        Route("/dlq/message", dead_letter),
        Route("/dlq/redrive", redrive, methods=["POST"]),
        Route("/dlq/purge", purge_confirm, methods=["GET"]),
        Route("/dlq/purge", purge, methods=["POST"]),
        Route("/health", health),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handled = (HTTPException, ClientError, BotoCoreError, DlqError, AlertsError, UploadError)
    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = (
        dict.fromkeys((*handled, ReplayError, ValueError, Exception), failure)
    )
    return Starlette(
        routes=routes,
        middleware=[Middleware(Guard, keys=keys, hosts=hosts)],
        exception_handlers=handlers,
    )


def _escape(text: str) -> str:
    return str(escape(visible(text)))
