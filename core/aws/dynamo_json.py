"""Request bodies of DynamoDB's bulk calls encoded by the C JSON encoder instead of botocore's walk.

botocore's JSON serializer walks the service model for every attribute value of every item (about
30 Python calls per order item): 1.5 of the 2.6 ms of CPU a 25-item BatchWriteItem took, and CPU
(one GIL) is what bounds parallel writers. For ``BatchWriteItem`` and ``BatchGetItem`` the walk
changes nothing but binary values (base64), so when the parameters hold none, ``json.dumps`` of
them is byte for byte the body botocore would send (a unit test holds it to that). ``install``
adds two handlers to a client's own event system:

- ``before-parameter-build`` (registered last, so every other handler, e.g. an injected fault
  withholding items, has already shaped the parameters): encode the final parameters, keep the
  bytes in the request context, and leave botocore only the table names to serialize (endpoint
  resolution reads them);
- ``before-call``: put those bytes in as the request body.

Everything after that is botocore's own: checksums, SigV4 signing of the real body, retries
(which resend the same body), response parsing. Parameters it cannot vouch for (bytes, text given
for a binary attribute, anything ``json`` cannot encode) take botocore's path unchanged.

The body is botocore's only for the protocol and the botocore releases it was checked against
(``TESTED_BOTOCORE``; the unit tests compare bytes, and constraints.txt pins the release that
runs, locally and in the Lambda artifact). Any other botocore, or a DynamoDB model that has moved
off the ``json`` protocol (botocore is moving some services to CBOR), gets no handlers: every call
takes botocore's own path, and the writer, asking ``installed``, sends plain requests.

A BatchWriteItem request may also arrive already encoded, as an ``EncodedRequest``: the orders
writer has polars encode a whole slice of rows at once, a fraction of the CPU of building and
encoding one dict per attribute. Such requests are spliced into the body as they are; they survive
anything that only moves requests around (retries of ``UnprocessedItems``, injected faults).
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

import botocore

log = logging.getLogger(__name__)

# The protocol whose request body json.dumps reproduces, and the botocore releases on which the
# unit tests proved it byte for byte. A new release is added here after they pass on it.
SPLICE_PROTOCOL = "json"
TESTED_BOTOCORE = frozenset({"1.44.8"})
FAST_OPERATIONS = frozenset({"BatchWriteItem", "BatchGetItem"})
_BODY = "orderpipe_json_body"
# json.dumps's own settings (botocore ends its walk with json.dumps), minus the bookkeeping that
# guards against circular references, which parameters built from data never have: a third
# less CPU for the same bytes.
_ENCODER = json.JSONEncoder(check_circular=False)
_INSTALLED: weakref.WeakSet[Any] = weakref.WeakSet()


class EncodedRequest(str):
    """One BatchWriteItem request, ``{"PutRequest": {"Item": {...}}}``, as JSON text.

    Only a client with ``install``ed encoding can send it (``installed``); botocore's own
    serializer expects a dict there.
    """

    __slots__ = ()


def refusal(protocol: str, botocore_version: str) -> str | None:
    """Why the splice must not run with this protocol and botocore; None when it may."""
    if protocol != SPLICE_PROTOCOL:
        return f"DynamoDB speaks {protocol!r} here, not {SPLICE_PROTOCOL!r}"
    if botocore_version not in TESTED_BOTOCORE:
        return f"botocore {botocore_version} is not one the body splice was tested with"
    return None


def _protocol(client: Any) -> str:
    model = client.meta.service_model
    return str(getattr(model, "resolved_protocol", None) or model.protocol)


def install(client: Any) -> bool:
    """Encode ``client``'s BatchWriteItem/BatchGetItem bodies with ``json.dumps`` (idempotent).

    Returns False, leaving the client as botocore made it, where the splice is not proven.
    """
    why_not = refusal(_protocol(client), botocore.__version__)
    if why_not is not None:
        log.warning("DynamoDB bulk bodies left to botocore: %s", why_not)
        return False
    events = client.meta.events
    events.register_last("before-parameter-build", _encode, unique_id="orderpipe-json-encode")
    events.register("before-call.dynamodb", _use_body, unique_id="orderpipe-json-body")
    _INSTALLED.add(client)
    return True


def installed(client: Any) -> bool:
    """Whether ``client`` accepts ``EncodedRequest`` items."""
    return client in _INSTALLED


def encode(params: dict[str, Any]) -> bytes | None:
    """The body botocore would send for ``params``, or None when only botocore's walk will do.

    The walk changes exactly one thing here: binary attribute values (``B``/``BS``), which it
    base64-encodes. Bytes fail ``json.dumps``; text given for a binary value shows in the output
    as a key ``"B"`` holding a string or ``"BS"`` holding a list. Inside an encoded string every
    quote is escaped, so those two patterns only ever match real keys (an attribute *named* B
    holds a map, ``{``, and never matches).
    """
    try:
        body = (_spliced(params) or _ENCODER.encode(params)).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return None
    if b'"B": "' in body or b'"BS": [' in body:
        return None
    return body


def _spliced(params: dict[str, Any]) -> str | None:
    """The body text with every ``EncodedRequest`` spliced in; None when there is none."""
    requested = params.get("RequestItems")
    if not isinstance(requested, dict) or not any(
        isinstance(request, EncodedRequest)
        for requests in requested.values()
        if isinstance(requests, list)
        for request in requests
    ):
        return None
    tables = []
    for table, requests in requested.items():
        texts = [r if isinstance(r, EncodedRequest) else _ENCODER.encode(r) for r in requests]
        tables.append(f"{_ENCODER.encode(table)}: [{', '.join(texts)}]")
    rest = {key: value for key, value in params.items() if key != "RequestItems"}
    tail = ", " + _ENCODER.encode(rest)[1:-1] if rest else ""
    return '{"RequestItems": {' + ", ".join(tables) + "}" + tail + "}"


def _encode(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    if model.name not in FAST_OPERATIONS or model.service_model.service_name != "dynamodb":
        return
    requested = params.get("RequestItems")
    if not isinstance(requested, dict):
        return
    body = encode(params)
    if body is None:
        return
    context[_BODY] = body
    # What botocore still serializes: the table names only (endpoint rules read
    # keys(RequestItems)); its placeholder body is replaced in before-call.
    params["RequestItems"] = {table: type(value)() for table, value in requested.items()}


def _use_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    body = context.pop(_BODY, None)
    if body is not None:
        params["body"] = body
