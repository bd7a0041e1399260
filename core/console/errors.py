"""AWS failures as one readable line for a page: no traceback, no credentials, no URL secrets."""

from __future__ import annotations

import re

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

_URL = re.compile(r"(https?://)([^\s\"'/]+@)?([^\s\"'/?#]+)[^\s\"']*")
_SECRETISH = re.compile(r"(?i)(signature|credential|token|secret|password)=[^\s&\"']+")


def scrub(text: str) -> str:
    """Keep a URL's scheme and host; drop user info, paths, queries, secret-looking pairs."""
    text = _URL.sub(lambda m: f"{m.group(1)}{m.group(3)}", text)
    return _SECRETISH.sub(lambda m: f"{m.group(1)}=…", text)


def readable(exc: BaseException) -> str:
    """What went wrong, for a person: the AWS error code and message, or the failure's kind."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: configure a profile, or start `orderpipe local`"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        message = error.get("Message") or ""
        return scrub(f"AWS said {code}: {message}".rstrip(": "))
    if isinstance(exc, BotoCoreError):
        return scrub(f"cannot reach AWS: {exc}")
    return scrub(str(exc)) or type(exc).__name__
