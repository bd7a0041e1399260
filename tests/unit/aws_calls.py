"""The AWS calls orderpipe's code makes, derived from its source, as IAM actions.

Read from the adapters' own code (Python's ``ast``): every call of a boto3 client method, a
paginator or a presigned URL, on a receiver named like a client. A role or a person's policy is
then the calls of the adapter methods its entry points call by name, followed through ``self.``
calls and through module functions handed a client. ``unclassified_calls`` is the safety net: a
boto3-looking call on a receiver this module does not recognise fails the tests instead of
escaping the derivation.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICES = ("s3", "sqs", "dynamodb", "ses", "sns", "events", "cloudwatch", "cloudformation", "sts")
# Receivers that hold a boto3 client, by the names the code gives them.
CLIENT_NAMES = frozenset(
    {"client", "s3", "sqs", "ddb", "dynamodb", "sns", "ses", "cw", "events", "cf", "probe"}
    | {"cloudformation", "dynamodb_bulk"}
)
# What the S3 transfer manager calls for upload_file (one PutObject, or the multipart calls).
TRANSFER = {
    "upload_file": (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    ),
}
# API operations whose IAM action has another name (Service Authorization Reference).
IAM_NAME = {
    ("s3", "HeadObject"): "GetObject",
    ("s3", "ListObjectVersions"): "ListBucketVersions",
    ("s3", "ListObjectsV2"): "ListBucket",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "CreateMultipartUpload"): "PutObject",
    ("s3", "UploadPart"): "PutObject",
    ("s3", "CompleteMultipartUpload"): "PutObject",
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}
# A version named in the call needs the *Version action instead.
VERSIONED = {("s3", "GetObject"): "GetObjectVersion", ("s3", "HeadObject"): "GetObjectVersion"}


@cache
def _methods() -> dict[str, dict[str, str]]:
    """boto3 method name -> {service: API operation name}."""
    session = boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    )
    out: dict[str, dict[str, str]] = {}
    for service in SERVICES:
        client = session.client(service, endpoint_url="http://127.0.0.1:9")
        for method, operation in client.meta.method_to_api_mapping.items():
            out.setdefault(method, {})[service] = operation
    return out


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    versioned: bool = False

    @property
    def actions(self) -> frozenset[str]:
        key = (self.service, self.operation)
        name = VERSIONED.get(key) if self.versioned else None
        return frozenset({f"{self.service}:{name or IAM_NAME.get(key, self.operation)}"})


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_")
    if isinstance(node, ast.Name):
        return node.id.lstrip("_")
    return None


def _is_client(node: ast.expr) -> bool:
    if (  # clients.client("sts")
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
    ):
        return True
    name = _receiver_name(node)
    return name is not None and (name in CLIENT_NAMES or name.endswith("client"))


def _service_of(method: str, receiver: str | None) -> str:
    services = _methods()[method]
    if len(services) == 1:
        return next(iter(services))
    for service in services:  # e.g. create_table: DynamoDB's or Glue's
        if receiver and service.startswith(receiver[:2]):
            return service
    raise AssertionError(f"cannot tell which service {receiver}.{method} calls")


def _boto_calls(node: ast.Call) -> list[Call]:
    """The AWS calls one call expression makes, if it is a client call."""
    func = node.func
    if not isinstance(func, ast.Attribute) or not _is_client(func.value):
        return []
    method, receiver = func.attr, _receiver_name(func.value)
    keywords = {k.arg for k in node.keywords}
    if method in ("get_paginator", "generate_presigned_url"):
        (arg, *_) = node.args
        assert isinstance(arg, ast.Constant), ast.unparse(node)
        method = str(arg.value)
    if method in TRANSFER:
        return [Call("s3", op) for op in TRANSFER[method]]
    if method not in _methods():
        return []
    service = _service_of(method, receiver)
    operation = _methods()[method][service]
    return [Call(service, operation, versioned="VersionId" in keywords)]


def unclassified_calls(paths: Iterable[pathlib.Path]) -> list[str]:
    """boto3-looking calls on receivers not named like a client (each needs a look)."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _methods()
                and not _is_client(node.func.value)
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.func)}")
    return found


# ---- following the code ------------------------------------------------------------------------


def _source_tree(obj: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


@dataclass
class _Body:
    calls: set[Call] = field(default_factory=set)
    self_calls: set[str] = field(default_factory=set)
    functions: set[Callable[..., Any]] = field(default_factory=set)


def _body(node: ast.AST, module: Any) -> _Body:
    body = _Body()
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        body.calls.update(_boto_calls(sub))
        func = sub.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("self", "cls")
        ):
            body.self_calls.add(func.attr)
        if isinstance(func, ast.Name):
            if func.id == "cls":
                body.self_calls.add("__init__")
            target = getattr(module, func.id, None)
            if inspect.isfunction(target) and target.__module__.startswith("core"):
                body.functions.add(target)
    return body


@cache
def function_calls(func: Callable[..., Any]) -> frozenset[Call]:
    """What a module function calls on the clients it is handed, and what its callees do."""
    module = importlib.import_module(func.__module__)
    body = _body(_source_tree(func), module)
    calls = set(body.calls)
    for callee in body.functions - {func}:
        calls |= function_calls(callee)
    return frozenset(calls)


@cache
def method_bodies(cls: type) -> dict[str, _Body]:
    module = importlib.import_module(cls.__module__)
    tree = _source_tree(cls)
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)][:1]
    return {
        item.name: _body(item, module)
        for item in node.body
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def adapter_calls(cls: type, used: Iterable[str]) -> set[Call]:
    """The AWS calls of ``cls``'s methods named in ``used``, through self-calls."""
    bodies = method_bodies(cls)
    todo = [m for m in used if m in bodies]
    seen: set[str] = set()
    calls: set[Call] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        body = bodies[name]
        calls |= body.calls
        for func in body.functions:
            calls |= function_calls(func)
        todo += [m for m in body.self_calls if m in bodies]
    return calls


def _names_in(node: ast.AST) -> set[str]:
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Attribute):
                names.add(sub.func.attr)
            elif isinstance(sub.func, ast.Name):
                names.add(sub.func.id)
    return names


def called_names(entries: Iterable[str]) -> set[str]:
    """Every attribute or function name called in these modules, or in ``module:f,g`` only
    in the functions named (nested ones too) and the module's functions they call."""
    names: set[str] = set()
    for entry in entries:
        module_name, _, only = entry.partition(":")
        module = importlib.import_module(module_name)
        tree = ast.parse(pathlib.Path(inspect.getfile(module)).read_text())
        if not only:
            names |= _names_in(tree)
            continue
        defs: dict[str, list[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defs.setdefault(node.name, []).append(node)
        todo, seen = only.split(","), set()
        while todo:
            name = todo.pop()
            if name in seen or name not in defs:
                continue
            seen.add(name)
            for node in defs[name]:
                found = _names_in(node)
                names |= found
                todo += [n for n in found if n in defs]
    return names


@dataclass(frozen=True)
class Entry:
    """Who acts (a function, a command): the modules whose calls choose adapter methods."""

    modules: tuple[str, ...]
    adapters: tuple[type, ...]
    functions: tuple[Callable[..., Any], ...] = ()

    def all_functions(self) -> set[Callable[..., Any]]:
        """The functions named, and every function of orderpipe's a whole-module entry holds
        (its own or imported, e.g. notify's handler calling ``retry_failed`` with a client)
        that calls a client and is called there."""
        names = called_names(self.modules)
        found = set(self.functions)
        for entry in self.modules:
            if ":" in entry:
                continue
            module = importlib.import_module(entry)
            for name, func in vars(module).items():
                if (
                    inspect.isfunction(func)
                    and func.__module__.startswith(("core.", "handlers."))
                    and name in names
                    and function_calls(func)
                ):
                    found.add(func)
        return found

    def calls(self) -> set[Call]:
        names = called_names(self.modules) | {"__init__"}
        calls: set[Call] = set()
        for cls in self.adapters:
            calls |= adapter_calls(cls, names)
        for func in self.all_functions():
            calls |= function_calls(func)
        return calls

    def actions(self) -> set[str]:
        return {a for c in self.calls() for a in c.actions}

    def calls_by_adapter(self) -> dict[type, set[str]]:
        names = called_names(self.modules) | {"__init__"}
        return {
            cls: {a for c in adapter_calls(cls, names) for a in c.actions} for cls in self.adapters
        }


def objects_reached(*roots: Any) -> Iterator[Any]:
    """Every object reachable through the roots' attributes (what a builder wired)."""
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | bool | type(None)):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, dict):
            todo += list(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            todo += list(obj)
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith(("core", "handlers")):
            todo += list(vars(obj).values())


def is_client(obj: Any) -> bool:
    return type(obj).__module__ == "botocore.client"


def wired_adapters(*roots: Any) -> dict[type, list[Any]]:
    """The objects the roots hold that hold a boto3 client, by class."""
    out: dict[type, list[Any]] = {}
    for obj in objects_reached(*roots):
        if (
            type(obj).__module__.startswith("core")
            and hasattr(obj, "__dict__")
            and any(is_client(v) for v in vars(obj).values())
        ):
            out.setdefault(type(obj), []).append(obj)
    return out
