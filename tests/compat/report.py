"""Write the "Second emulator" section of docs/reliability.md from a `make compat` run.

Only that section is replaced; ``bench/reliability_report.py`` keeps it when it regenerates
the rest of the page.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
HEADING = "## Second emulator"
BEFORE = "## What these runs do not prove"

INTRO = """\
## Second emulator: LocalStack

moto is wrong exactly where orderpipe's design leans on AWS: its S3 events carry no `versionId`
and no `sequencer`, it has no `StartMessageMoveTask`, and an EventBridge rule with an SNS target
makes `put_events` fail. `make compat` runs the scenarios below on a second emulator instead:
S3, SQS, SNS, EventBridge and SES on LocalStack, DynamoDB on moto. The stack is wired as on AWS,
by endpoint: `AWS_ENDPOINT_URL` names LocalStack and `AWS_ENDPOINT_URL_DYNAMODB` names moto
(`core.aws.clients` ranks a service's own variable above the general one, as boto3 does). The
real handlers run in the local worker, which calls them as Lambda's SQS event source does.

It also runs, on an SQS and S3 written by other people than moto's, what the pipeline promises
for any key (non-ASCII keys with `#`, `?`, `+` and `%`, put, uploaded in parts, copied, and
uploaded by the `aws` CLI), for retries (a failed message comes back after the handler's
backoff, set with `ChangeMessageVisibility` by receive count, not after the queue's visibility
timeout; after five receives it is in the DLQ with the ledger saying why; the local schedule is
1/2/4/8 s, AWS's 30 s/2/8/30 min) and for a busy file (two ingest processes, one message each
as on AWS, race on two versions of one key: the loser reports a batch item failure, no handler
error, and each version ends with one outcome).

**Run it:** `make compat`. It is not part of `make test` or CI. It needs Python 3.12 or newer
for LocalStack (found on `PATH` or under `~/.pyenv/versions`, or set `COMPAT_PYTHON=...`) and
builds `.venv-compat` from `tests/compat/requirements.txt` and `constraints.txt` on first use
(about 500 MB, a few minutes). LocalStack runs on the host without Docker
(`python -m localstack.runtime.main` with `OVERRIDE_IN_DOCKER=0 DNS_ADDRESS=0
SQS_ENDPOINT_STRATEGY=path DISABLE_EVENTS=1`, on a free loopback port), moto on another; both are
stopped when the run ends, however it ends. Logs go to `build/compat/`.
"""

DIFFERENCES = """\
What LocalStack does differently, seen in these runs, and how orderpipe takes it:

- **Event keys are percent-encoded** (`Q4%20orders%2Breturns%20%28final%29.csv`); AWS writes
  `+` for a space. orderpipe decodes keys with `unquote_plus`, which reads both; the pipeline
  scenario checks the encoded key in the event and the decoded one in the ledger and email.
- **The sequencer is one fixed value** for every event. orderpipe ranks versions by event time
  (milliseconds), then sequencer, then version id, so on LocalStack two versions of one key
  written in the same millisecond are ordered by version id; on AWS the sequencer breaks that
  tie. The ordering scenario writes its two versions 10 ms apart.
- **A redriven message keeps its message id and receive count** (AWS gives it a new id), and it
  is delivered even with a receive count above `maxReceiveCount`. Nothing in orderpipe keys on
  a dead letter's id after a redrive; the ledger decides whether a file is done.
- **SES accepts mail to unverified recipients** (the sandbox is not enforced); sends are read
  back at `GET /_aws/ses`.
- **A multipart upload yields one `ObjectCreated:CompleteMultipartUpload` event**, as on AWS
  (moto sends two). A server-side copy yields one `ObjectCreated:Copy` with the copy's version.
- **Non-ASCII keys are spelled `quote`-style in events** (UTF-8 bytes as `%XX`, `%20` for a
  space, `%2B` for `+`, `%23`, `%3F`, `%25`): none of the any-key scenario's keys is spelled as
  AWS spells it (`quote_plus`), and `unquote_plus` reads every one back to the exact key. The
  `aws` CLI's upload (`aws s3 cp`) of such a key is stored and evented like boto3's.
- **`ChangeMessageVisibility` on a received message wins over the queue's visibility timeout**,
  and a message made visible at once on its fifth receive is moved to the DLQ by the next
  receive, as AWS documents for `maxReceiveCount`. LocalStack makes expired in-flight messages
  visible on a 1 s tick, so each measured gap is the backoff plus up to 1 s, plus the worker's
  0.2 s idle poll and the handler's own time (the scenarios assert backoff <= gap < the queue's
  12 s visibility timeout).

What cannot run on LocalStack here, and why:

- **DynamoDB**: LocalStack downloads a JDK and DynamoDB Local at first use and fails offline;
  the tables stay on moto.
- **Lambda**: LocalStack runs functions in Docker, which this kind of host lacks; the handlers
  run in the local worker instead, so Lambda's own retry and concurrency are not exercised
  (the busy-file scenario stands two worker processes in for two function instances).
- **Glue**: the API is not in LocalStack's free edition; the alerts scenario publishes the
  Glue Job State Change event itself, through the template's own rule and topic.
- CloudWatch alarms firing into the topic are not exercised.
"""


def section(rows: list[dict[str, object]], wall_s: int, localstack: str) -> str:
    passed = sum(1 for r in rows if r["outcome"] == "passed")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        INTRO,
        f"**Last run** ({when}): {passed} of {len(rows)} scenarios passed in {wall_s} s;\n"
        f"LocalStack {localstack}, moto {version('moto')}, boto3 {version('boto3')}, "
        f"Python {platform.python_version()} (tests), on a shared 2-core machine.",
        "",
        "| Scenario | Result | Seconds (test body) | Figures |",
        "|---|---|---|---|",
    ]
    for row in rows:
        figures = row.get("figures") or {}
        assert isinstance(figures, dict)
        shown = "; ".join(_figure(k, v) for k, v in figures.items()) or "-"
        result = "passed" if row["outcome"] == "passed" else f"**{str(row['outcome']).upper()}**"
        lines.append(
            f"| {row['scenario'] or row['test']} | {result} | {row['seconds']} | {shown} |"
        )
    lines += ["", DIFFERENCES]
    return "\n".join(lines)


def _figure(name: str, value: object) -> str:
    """``upload_to_outcome_s=1.2`` → ``upload to outcome 1.2 s``."""
    if name.endswith("_s"):
        return f"{name[:-2].replace('_', ' ')} {value} s"
    return f"{name.replace('_', ' ')} {value}"


def splice(doc: str, new: str) -> str:
    """``doc`` with its "Second emulator" section replaced by ``new`` (or inserted)."""
    start = doc.find("\n" + HEADING)
    if start >= 0:
        end = doc.find("\n## ", start + 1)
        tail = doc[end:] if end >= 0 else "\n"
        return doc[: start + 1] + new.rstrip("\n") + "\n" + tail
    before = doc.find("\n" + BEFORE)
    if before >= 0:
        return doc[: before + 1] + new.rstrip("\n") + "\n\n" + doc[before + 1 :]
    return doc.rstrip("\n") + "\n\n" + new.rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--wall", type=int, required=True, help="seconds the tests took")
    parser.add_argument("--localstack", required=True, help="localstack-core version")
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    rows = []
    if args.results.exists():
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    if not rows:
        print(f"compat: no results in {args.results}; {args.out} left as it was")
        return
    doc = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    args.out.write_text(splice(doc, section(rows, args.wall, args.localstack)), encoding="utf-8")
    print(f"compat: wrote the second-emulator section of {args.out} ({len(rows)} scenarios)")


if __name__ == "__main__":
    main()
