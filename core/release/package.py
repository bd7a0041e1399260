"""Build what a deployment uploads: the functions' code, a dependencies layer, the Glue job.

Lambda code and layers together may take 250 MB unzipped and polars alone is about 180 MB, so
every byte is accounted for: wheels are the target's own (pip ``--platform``/``--only-binary``
for the runtime's Python and architecture), boto3 and botocore are bundled at the versions the
tests ran with (the runtime's own copy is neither pinned nor the one tested), every version comes
from ``constraints.txt`` (the same file ``make venv`` installs with), caches and type stubs are
dropped, and native libraries lose their symbol tables when a strip tool is at hand. polars goes
into a layer of its own: it changes rarely, so a code change uploads a smaller zip. Every zip is
byte-for-byte reproducible, so unchanged inputs give unchanged S3 keys and a no-op deploy.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess  # pip and the packaging tools, argv lists, no shell  # nosec B404
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT_DIR = PROJECT_ROOT / "dist" / "orderpipe"
MANIFEST_NAME = "manifest.json"

ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}
PYTHON_VERSIONS = ("3.12", "3.13")  # the Lambda runtimes the template allows
GLUE_PYTHON = "3.9"

# Lambda's "250 MB" for function code plus all its layers, unzipped, is 250 MiB.
MIB = 1024 * 1024
LAMBDA_UNZIPPED_LIMIT = 250 * MIB

# The layer holds polars; the function zip the rest. Versions are pinned to this environment's
# so Lambda runs what the tests ran: boto3 too, which then shadows the runtime's own copy
# (the function's code comes first on sys.path).
LAYER_REQUIREMENTS = ("polars",)
CODE_REQUIREMENTS = ("boto3", "python-calamine", "aws-lambda-powertools", "aws-xray-sdk")
# Every version of every distribution, direct or not: the venv's pins (``make constraints``).
CONSTRAINTS_FILE = "constraints.txt"
# Project code for the two functions (ingest, notify): what they run and nothing else, so no
# CLI, local stack, release or ops code, and no test harness (that lives under tests/). A folder
# ships whole; tests/unit/test_package.py checks this against the handlers' real imports.
LAMBDA_SOURCES = (
    "core/__init__.py",
    "core/bootstrap.py",
    "core/aws",
    "core/pipeline",
    "core/validation",
    "handlers/__init__.py",
    "handlers/ingest.py",
    "handlers/notify.py",
)
PROJECT_SUFFIXES = (".py", ".json")

GLUE_SCRIPT = "handlers/reconcile_job.py"
GLUE_WHEEL_NAME = "orderpipe_reconcile"

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class PackageError(RuntimeError):
    """Packaging cannot go on; the message is one line for a person."""


@dataclass(frozen=True)
class Target:
    arch: str = "arm64"
    python: str = "3.12"

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise PackageError(f"--arch must be one of {', '.join(ARCHITECTURES)}, not {self.arch}")
        if self.python not in PYTHON_VERSIONS:
            raise PackageError(
                f"--python must be one of {', '.join(PYTHON_VERSIONS)}, not {self.python}"
            )

    @property
    def runtime(self) -> str:
        return f"python{self.python}"

    @property
    def platforms(self) -> tuple[str, ...]:
        # Lambda's Python 3.12+ runtimes run on glibc 2.34; older manylinux tags also fit.
        machine = ARCHITECTURES[self.arch]
        return (
            f"manylinux_2_34_{machine}",
            f"manylinux_2_28_{machine}",
            f"manylinux2014_{machine}",
        )


@dataclass(frozen=True)
class Artifact:
    role: str  # code | layer | reconcile_script | reconcile_wheel
    file: str
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int

    @property
    def key(self) -> str:
        """Content-addressed S3 key: same bytes, same key, nothing for CloudFormation to do."""
        return f"orderpipe/{self.sha256[:16]}/{self.file}"


@dataclass
class Manifest:
    arch: str
    python: str
    artifacts: dict[str, Artifact]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Project files each artifact ships: "code" (the function zip), "reconcile_wheel" (Glue).
    modules: dict[str, list[str]] = field(default_factory=dict)

    @property
    def runtime(self) -> str:
        return f"python{self.python}"

    @property
    def lambda_unzipped_bytes(self) -> int:
        return sum(self.artifacts[r].unzipped_bytes for r in ("code", "layer"))

    def to_json(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "python": self.python,
            "runtime": self.runtime,
            "lambda_unzipped_bytes": self.lambda_unzipped_bytes,
            "lambda_unzipped_limit": LAMBDA_UNZIPPED_LIMIT,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "modules": self.modules,
            "artifacts": {
                role: {**asdict(a), "key": a.key} for role, a in sorted(self.artifacts.items())
            },
        }

    def save(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        path = out_dir / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text())
            artifacts = {
                role: Artifact(
                    role=role,
                    file=a["file"],
                    sha256=a["sha256"],
                    zipped_bytes=int(a["zipped_bytes"]),
                    unzipped_bytes=int(a["unzipped_bytes"]),
                )
                for role, a in raw["artifacts"].items()
            }
            manifest = cls(raw["arch"], raw["python"], artifacts, list(raw.get("notes", [])))
            manifest.modules = {k: list(v) for k, v in raw.get("modules", {}).items()}
        except FileNotFoundError:
            raise PackageError(
                f"no artifacts in {out_dir}: run `orderpipe package` first"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PackageError(f"unreadable {path}: {exc}; run `orderpipe package` again") from None
        for artifact in artifacts.values():
            file = out_dir / artifact.file
            if not file.is_file() or file_sha256(file) != artifact.sha256:
                raise PackageError(f"{file} is missing or changed: run `orderpipe package` again")
        return manifest


# ---- building blocks ------------------------------------------------------------------------


def pinned(requirements: Iterable[str]) -> list[str]:
    """``name==version`` of this environment's copy, so Lambda runs what the tests ran."""
    out = []
    for name in requirements:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def constraint_args(project_root: Path) -> list[str]:
    """``--constraint constraints.txt`` when the project has one (a checkout always does)."""
    path = project_root / CONSTRAINTS_FILE
    return ["--constraint", str(path)] if path.is_file() else []


def pip_install(
    requirements: Sequence[str], target_dir: Path, target: Target, pip_args: Sequence[str]
) -> None:
    """Install the target platform's wheels (never an sdist: nothing is compiled here)."""
    command = [sys.executable, "-m", "pip", "install", "--target", str(target_dir)]
    command += ["--only-binary=:all:", "--implementation", "cp"]
    command += ["--python-version", target.python, "--no-compile", "--quiet"]
    command += ["--disable-pip-version-check", "--no-warn-script-location"]
    for tag in target.platforms:
        command += ["--platform", tag]
    command += [*pip_args, *requirements]
    # pip with an argv list built here from the project's own requirements; no shell.
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  # nosec B603
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or [
            ln for ln in done.stderr.splitlines() if ln.strip()
        ]
        reason = lines[-1] if lines else f"pip exited {done.returncode}"
        raise PackageError(
            f"pip could not get {' '.join(requirements)} for {target.arch}/{target.runtime}: "
            f"{reason.removeprefix('ERROR: ')} (is the package registry reachable? "
            "--find-links DIR builds from a local wheel folder)"
        )


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_distributions(site: Path) -> dict[str, Path]:
    """Distribution name (canonical) -> its .dist-info folder under ``site``."""
    found = {}
    for info in site.glob("*.dist-info"):
        name = ""
        meta = info / "METADATA"
        if meta.is_file():
            for line in meta.read_text(errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip()
                    break
        found[_canonical(name or info.name.split("-")[0])] = info
    return found


def remove_distribution(site: Path, info: Path) -> int:
    """Delete every file a distribution's RECORD lists; return the bytes freed."""
    freed = 0
    record = info / "RECORD"
    paths = []
    if record.is_file():
        for line in record.read_text().splitlines():
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            if rel:
                paths.append(site / rel)
    for path in paths:
        resolved = path.resolve()
        if site.resolve() not in resolved.parents or not resolved.is_file():
            continue  # RECORD may name files outside the target (scripts): leave those
        freed += resolved.stat().st_size
        resolved.unlink()
    freed += _tree_size(info)
    shutil.rmtree(info, ignore_errors=True)
    _remove_empty_dirs(site)
    return freed


def _remove_empty_dirs(root: Path) -> None:
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def strip_tool(target: Target) -> list[str] | None:
    """A strip command that understands the target's machine code, or None."""
    if shutil.which("llvm-strip"):
        return ["llvm-strip", "--strip-unneeded"]
    native = platform.machine().lower() in (ARCHITECTURES[target.arch], target.arch)
    if native and shutil.which("strip"):
        return ["strip", "--strip-unneeded"]
    return None


def slim(site: Path, target: Target, *, strip: bool) -> tuple[int, list[str]]:
    """Drop what the runtime never reads; strip native libraries. Returns (bytes saved, notes)."""
    before = _tree_size(site)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: nothing runs them
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    for pattern in ("*.pyc", "*.pyi"):
        for path in site.rglob(pattern):
            path.unlink()
    notes: list[str] = []
    libraries = sorted(p for p in site.rglob("*.so*") if p.is_file())
    if strip and libraries:
        tool = strip_tool(target)
        if tool is None:
            notes.append(
                f"native libraries not stripped: no strip tool for {target.arch} "
                "(install llvm for llvm-strip)"
            )
        else:
            for library in libraries:
                # A fixed tool on the artifact's own files, argv list, no shell.
                done = subprocess.run(  # noqa: S603  # nosec B603
                    [*tool, str(library)], capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    notes.append(f"could not strip {library.name}: {done.stderr.strip()[:120]}")
    return before - _tree_size(site), notes


def lambda_modules(root: Path) -> tuple[str, ...]:
    """Every project file the function zip ships (``LAMBDA_SOURCES`` expanded), sorted."""
    found: list[str] = []
    for source in LAMBDA_SOURCES:
        path = root / source
        if path.is_file():
            found.append(source)
        elif path.is_dir():
            found += [
                p.relative_to(root).as_posix()
                for p in path.rglob("*")
                if p.is_file() and p.suffix in PROJECT_SUFFIXES and "__pycache__" not in p.parts
            ]
        else:
            raise PackageError(f"{path} not found: the Lambda code would be incomplete")
    return tuple(sorted(found))


def copy_project(root: Path, dest: Path, modules: Iterable[str]) -> None:
    for rel in modules:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def deterministic_zip(source: Path, dest: Path, *, prefix: str = "") -> int:
    """Zip ``source`` with fixed timestamps and order; return the unzipped size."""
    total = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(prefix + path.relative_to(source).as_posix(), ZIP_EPOCH)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data)
    return total


def write_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    requires_python: str = "",
    requires: Sequence[str] = (),
) -> Path:
    """A pure-Python wheel (py3-none-any), reproducible byte for byte."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    entries = dict(sorted(files.items()))
    entries[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: orderpipe\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, data in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = dest_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries.items():
            zinfo = zipfile.ZipInfo(path, ZIP_EPOCH)
            zinfo.external_attr = (0o100644) << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(zinfo, data)
    return wheel


def glue_modules(root: Path) -> tuple[str, ...]:
    """The modules the reconcile job ships beside its script (``SHIPPED_MODULES`` there)."""
    script = root / GLUE_SCRIPT
    try:
        tree = ast.parse(script.read_text(), str(script))
    except OSError:
        raise PackageError(f"{script} not found: the reconcile job's script is missing") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SHIPPED_MODULES" for t in node.targets
        ):
            modules = ast.literal_eval(node.value)
            return tuple(str(m) for m in modules)
    raise PackageError(f"{script} does not declare SHIPPED_MODULES")


def project_version() -> str:
    try:
        return metadata.version("orderpipe")
    except metadata.PackageNotFoundError:
        return "0.0.0"


# ---- the build -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    target: Target = Target()
    out_dir: Path = DEFAULT_OUT_DIR
    project_root: Path = PROJECT_ROOT
    pip_args: tuple[str, ...] = ()
    strip: bool = True
    layer_requirements: tuple[str, ...] = LAYER_REQUIREMENTS
    code_requirements: tuple[str, ...] = CODE_REQUIREMENTS
    limit_bytes: int = LAMBDA_UNZIPPED_LIMIT
    pin: bool = True


def _artifact(role: str, path: Path, unzipped: int) -> Artifact:
    return Artifact(role, path.name, file_sha256(path), path.stat().st_size, unzipped)


def _largest(site: Path, count: int = 3) -> str:
    sizes = sorted(
        ((_tree_size(p) if p.is_dir() else p.stat().st_size, p.name) for p in site.iterdir()),
        reverse=True,
    )
    return ", ".join(f"{name} {size / MIB:.0f} MiB" for size, name in sizes[:count])


def check_limit(layer_site: Path, code_site: Path, limit_bytes: int) -> None:
    """Refuse, naming the biggest parts, when code plus layer would not fit in Lambda."""
    total = _tree_size(layer_site) + _tree_size(code_site)
    if total > limit_bytes:
        raise PackageError(
            f"the Lambda code would be {total / MIB:.1f} MiB unzipped, over the "
            f"{limit_bytes / MIB:.1f} MiB limit for code plus layers "
            f"(largest: {_largest(layer_site)}; {_largest(code_site)})"
        )


def build(options: BuildOptions) -> Manifest:
    """Build every artifact into ``options.out_dir``; raise PackageError past the Lambda limit."""
    started = time.monotonic()
    target, out = options.target, options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="orderpipe-package-") as tmp:
        layer_site = Path(tmp) / "layer"
        code_site = Path(tmp) / "code"
        reqs = pinned if options.pin else list
        pip_args = [*constraint_args(options.project_root), *options.pip_args]
        pip_install(reqs(options.layer_requirements), layer_site, target, pip_args)
        pip_install(reqs(options.code_requirements), code_site, target, pip_args)

        in_layer = installed_distributions(layer_site)
        for name, info in installed_distributions(code_site).items():
            if name in in_layer:
                remove_distribution(code_site, info)
        for site in (layer_site, code_site):
            saved, slim_notes = slim(site, target, strip=options.strip)
            notes += slim_notes
            if saved:
                notes.append(f"{site.name}: {saved / MIB:.1f} MiB of caches, stubs and symbols cut")
        shipped = lambda_modules(options.project_root)
        copy_project(options.project_root, code_site, shipped)

        check_limit(layer_site, code_site, options.limit_bytes)
        layer_zip, code_zip = out / "deps-layer.zip", out / "function.zip"
        layer_size = deterministic_zip(layer_site, layer_zip, prefix="python/")
        code_size = deterministic_zip(code_site, code_zip)

    script = options.project_root / GLUE_SCRIPT
    modules = glue_modules(options.project_root)
    files = {m: (options.project_root / m).read_bytes() for m in modules}
    wheel = write_wheel(
        out, GLUE_WHEEL_NAME, project_version(), files, requires_python=f">={GLUE_PYTHON}"
    )
    shutil.copyfile(script, out / script.name)

    manifest = Manifest(
        arch=target.arch,
        python=target.python,
        artifacts={
            "code": _artifact("code", code_zip, code_size),
            "layer": _artifact("layer", layer_zip, layer_size),
            "reconcile_script": _artifact(
                "reconcile_script", out / script.name, (out / script.name).stat().st_size
            ),
            "reconcile_wheel": _artifact("reconcile_wheel", wheel, sum(map(len, files.values()))),
        },
        notes=notes,
        seconds=time.monotonic() - started,
        modules={"code": list(shipped), "reconcile_wheel": list(modules)},
    )
    manifest.save(out)
    return manifest
