"""No secret, credential or account ID is committed: every tracked file is scanned.

The scanner's patterns are proven on planted examples built at run time, so this file itself
holds nothing they would match. Two account IDs are allowed because they are not accounts:
``000000000000`` (what the local worker puts in its Lambda context ARN) and ``123456789012``
(the emulator's default account and AWS's documented example).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER_ACCOUNTS = {"000000000000", "123456789012"}

ACCESS_KEY_ID = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])"
)
SECRET_KEY = re.compile(
    r"(?i)aws.{0,20}?(?:secret|private).{0,20}?[\"'=:\s]+([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
)
PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----")
ARN_ACCOUNT = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
ACCOUNT_SETTING = re.compile(r"(?i)account[_-]?id[\"'\s]*[:=][\"'\s]*(\d{12})(?!\d)")
SESSION_TOKEN = re.compile(r"(?i)aws_session_token[\"'\s]*[:=][\"'\s]*([A-Za-z0-9/+=]{100,})")


def findings(text: str) -> list[str]:
    """What in ``text`` looks like a credential or a real account ID."""
    found = [f"access key id {m.group(0)[:8]}…" for m in ACCESS_KEY_ID.finditer(text)]
    found += ["secret access key" for _ in SECRET_KEY.finditer(text)]
    found += ["private key block" for _ in PRIVATE_KEY.finditer(text)]
    found += ["session token" for _ in SESSION_TOKEN.finditer(text)]
    for pattern in (ARN_ACCOUNT, ACCOUNT_SETTING):
        found += [
            f"account id {m.group(1)}"
            for m in pattern.finditer(text)
            if m.group(1) not in PLACEHOLDER_ACCOUNTS
        ]
    return found


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: nothing is tracked")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_holds_a_secret_or_an_account_id() -> None:
    problems = []
    files = tracked_files()
    assert files, "git lists no tracked files"
    for path in files:
        try:
            text = path.read_bytes()[:5_000_000].decode("utf-8", "replace")
        except OSError:
            continue  # listed but deleted in the working tree
        problems += [f"{path.relative_to(ROOT)}: {what}" for what in findings(text)]
    assert problems == []


# Planted examples, assembled so that no line of this file matches a pattern.
KEY_ID = "AKIA" + "Z" * 4 + "7" * 12
SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY" + "1" * 10
ACCOUNT = "4" * 6 + "1" * 6


@pytest.mark.parametrize(
    ("planted", "what"),
    [
        (f"aws_access_key_id = {KEY_ID}", "access key id"),
        (f'AWS_SECRET_ACCESS_KEY="{SECRET}"', "secret access key"),
        ("-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE...", "private key block"),
        (f"Role: arn:aws:iam::{ACCOUNT}:role/orderpipe", f"account id {ACCOUNT}"),
        (f'"AccountId": "{ACCOUNT}"', f"account id {ACCOUNT}"),
        ("aws_session_token=" + "F" * 120, "session token"),
    ],
)
def test_the_scanner_finds_what_it_looks_for(planted: str, what: str) -> None:
    assert any(f.startswith(what) for f in findings(planted)), findings(planted)


@pytest.mark.parametrize(
    "harmless",
    [
        "arn:aws:lambda:us-east-1:000000000000:function:orderpipe-local-ingest",
        "arn:aws:sqs:us-east-1:123456789012:orderpipe-local-ingest",
        "AWS_SECRET_ACCESS_KEY=testing",
        "Order_Total 123456789012.50",
        "etag:bd9bf1666aaca73123b4c250a68fe7de",
    ],
)
def test_the_scanner_leaves_placeholders_and_data_alone(harmless: str) -> None:
    assert findings(harmless) == []
