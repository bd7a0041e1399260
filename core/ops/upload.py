"""Put order files under ``incoming/`` and wait for the pipeline's verdict on each.

Small files go up in one PutObject; large ones as a multipart upload with parts sent in
parallel. Either way S3 answers with the version (and ETag) it stored, which names the ledger
item the pipeline will write; waiting is a consistent read of that item until it is final.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.aws.settings import INCOMING_PREFIX
from core.aws.stack import MAX_RECEIVE_COUNT
from core.ops.file_list import expand
from core.pipeline.ledger import DynamoLedger, LedgerEntry, Status

MIB = 1024 * 1024
MULTIPART_THRESHOLD = 16 * MIB
PART_SIZE = 8 * MIB  # S3's minimum is 5 MiB for every part but the last
PART_THREADS = 4

Progress = Callable[[int], None]  # bytes just sent
T = TypeVar("T")


class UploadError(RuntimeError):
    """A file could not be read or stored; the message is one line for a person."""


@dataclass(frozen=True)
class Uploaded:
    path: Path
    bucket: str
    key: str
    version: str  # S3 versionId, "" on an unversioned bucket
    etag: str
    size: int
    sent_at: float  # time.monotonic() when S3 acknowledged it

    @property
    def file_ids(self) -> tuple[str, ...]:
        """The ledger ids this object may be recorded under (events without a version use ETag)."""
        ids = [f"{self.bucket}/{self.key}#etag:{self.etag}"]
        if self.version:
            ids.insert(0, f"{self.bucket}/{self.key}#{self.version}")
        return tuple(ids)


@dataclass(frozen=True)
class FileResult:
    """One uploaded file and what the pipeline made of it (``entry`` None: no outcome yet)."""

    upload: Uploaded
    entry: LedgerEntry | None
    seconds: float | None  # upload acknowledged → outcome recorded, as this client saw it

    @property
    def status(self) -> str:
        if self.entry is None:
            return "PENDING"
        return str(self.entry.status)

    @property
    def clean(self) -> bool:
        return self.entry is not None and self.entry.status == Status.SUCCEEDED

    def to_json_dict(self) -> dict[str, Any]:
        entry = self.entry
        error = None
        if entry is not None:
            error = entry.error or (entry.last_error if entry.status != Status.SUCCEEDED else None)
        return {
            "key": self.upload.key,
            "status": self.status,
            "rows": entry.rows if entry and entry.finished else None,
            "valid": entry.valid if entry and entry.finished else None,
            "invalid": entry.invalid if entry and entry.finished else None,
            "reasons": dict(entry.reasons) if entry and entry.finished else None,
            "error": error,
            "version": self.upload.version or None,
            "file_id": entry.file_id if entry else self.upload.file_ids[0],
            "seconds": None if self.seconds is None else round(self.seconds, 3),
        }


def is_final(entry: LedgerEntry) -> bool:
    """Finished, or failed so often that its message is in the dead-letter queue."""
    return entry.finished or (entry.status == Status.FAILED and entry.attempts >= MAX_RECEIVE_COUNT)


def key_for(path: Path, prefix: str = "") -> str:
    """``incoming/<prefix><file name>``; the prefix may name a sub-folder."""
    prefix = prefix.strip("/")
    return f"{INCOMING_PREFIX}{prefix + '/' if prefix else ''}{path.name}"


def plan(paths: Sequence[Path], prefix: str = "") -> list[tuple[Path, str]]:
    """Pair each file with its key; refuse two files that would land on one key."""
    pairs = [(p, key_for(p, prefix)) for p in expand(paths)]
    if not pairs:
        raise UploadError("no files to upload")
    seen: dict[str, Path] = {}
    for path, key in pairs:
        if key in seen:
            raise UploadError(f"{seen[key]} and {path} would both be uploaded as {key}")
        seen[key] = path
    return pairs


class Uploader:
    """Puts files into the orders bucket through an injected S3 client."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        threads: int = PART_THREADS,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.threads = threads

    def put(self, path: Path, key: str, progress: Progress | None = None) -> Uploaded:
        size = _read(path, lambda: path.stat().st_size)
        if size >= self.multipart_threshold:
            answer = self._multipart(path, key, size, progress)
        else:
            body = _read(path, path.read_bytes)
            answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            if progress:
                progress(size)
        return Uploaded(
            path=path,
            bucket=self.bucket,
            key=key,
            version=str(answer.get("VersionId") or ""),
            etag=str(answer.get("ETag", "")).strip('"'),
            size=size,
            sent_at=time.monotonic(),
        )

    def _multipart(self, path: Path, key: str, size: int, progress: Progress | None) -> Any:
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

        def send(number: int) -> dict[str, Any]:
            body = _read(path, lambda: _chunk(path, (number - 1) * self.part_size, self.part_size))
            answer = self.s3.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            if progress:
                progress(len(body))
            return {"PartNumber": number, "ETag": answer["ETag"]}

        count = max(1, -(-size // self.part_size))
        try:
            with ThreadPoolExecutor(self.threads) as pool:
                parts = list(pool.map(send, range(1, count + 1)))
            return self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Abandoned parts are billed until aborted.
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise


def _read(path: Path, read: Callable[[], T]) -> T:
    try:
        return read()
    except OSError as exc:
        raise UploadError(f"cannot read {path}: {exc.strerror or exc}") from None


def _chunk(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def wait_for_outcomes(
    ledger: DynamoLedger,
    uploads: Sequence[Uploaded],
    timeout_s: float,
    *,
    poll_s: float = 0.05,
    on_result: Callable[[FileResult], None] | None = None,
    on_poll: Callable[[int, LedgerEntry | None], None] | None = None,
) -> list[FileResult]:
    """Read each upload's ledger item until it is final or ``timeout_s`` passes.

    Results come back in upload order; ``on_result`` hears about each one as soon as it is
    final (the rest, still pending at the deadline, are reported last with their last state);
    ``on_poll`` hears every read (upload index, entry), for progress while a file is processed.
    """
    deadline = time.monotonic() + timeout_s
    results: dict[int, FileResult] = {}
    latest: dict[int, LedgerEntry | None] = dict.fromkeys(range(len(uploads)))
    while True:
        for index, upload in enumerate(uploads):
            if index in results:
                continue
            entry = _lookup(ledger, upload)
            latest[index] = entry
            if on_poll:
                on_poll(index, entry)
            if entry is not None and is_final(entry):
                result = FileResult(upload, entry, time.monotonic() - upload.sent_at)
                results[index] = result
                if on_result:
                    on_result(result)
        if len(results) == len(uploads) or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    for index, upload in enumerate(uploads):
        if index not in results:
            results[index] = FileResult(upload, latest[index], None)
            if on_result:
                on_result(results[index])
    return [results[i] for i in range(len(uploads))]


def _lookup(ledger: DynamoLedger, upload: Uploaded) -> LedgerEntry | None:
    found = None
    for file_id in upload.file_ids:
        found = ledger.get(file_id)
        if found is not None:
            return found
    return found


def total_size(paths: Iterable[Path]) -> int:
    return sum(os.path.getsize(p) for p in paths)
