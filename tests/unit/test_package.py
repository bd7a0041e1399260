"""``orderpipe package``: offline from a local wheel folder, and once for real when a registry is
reachable (slow: polars for Lambda is a 45 MB download)."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.cli import cli
from core.cli.package import summary_lines
from core.release.package import (
    LAMBDA_UNZIPPED_LIMIT,
    MIB,
    BuildOptions,
    Manifest,
    PackageError,
    Target,
    build,
    check_limit,
    deterministic_zip,
    write_wheel,
)


def fake_wheelhouse(root: Path) -> Path:
    """Tiny stand-ins with the real names and dependency shape (xray pulls in botocore)."""
    house = root / "wheels"
    house.mkdir()
    write_wheel(house, "polars", "9.0.0", {"polars/__init__.py": b"X = 1\n" * 5000})
    write_wheel(
        house,
        "python-calamine",
        "9.0.0",
        {"python_calamine/__init__.py": b"", "python_calamine/a.pyi": b""},
    )
    write_wheel(
        house,
        "aws-lambda-powertools",
        "9.0.0",
        {"aws_lambda_powertools/__init__.py": b"", "aws_lambda_powertools/__pycache__/x.pyc": b"c"},
        requires=["typing-extensions"],
    )
    write_wheel(house, "typing-extensions", "9.0.0", {"typing_extensions.py": b""})
    write_wheel(
        house, "aws-xray-sdk", "9.0.0", {"aws_xray_sdk/__init__.py": b""}, requires=["botocore"]
    )
    write_wheel(house, "boto3", "9.0.0", {"boto3/__init__.py": b""}, requires=["botocore"])
    write_wheel(house, "botocore", "9.0.0", {"botocore/__init__.py": b""}, requires=["urllib3"])
    # Two releases: constraints.txt picks the older, as pip alone would pick the newer.
    write_wheel(house, "urllib3", "8.0.0", {"urllib3/__init__.py": b"V = 8\n"})
    write_wheel(house, "urllib3", "9.0.0", {"urllib3/__init__.py": b"V = 9\n"})
    return house


def fake_project(root: Path) -> Path:
    project = root / "project"
    files = {
        "core/__init__.py": "",
        "core/bootstrap.py": "",
        "core/aws/clients.py": "",
        "core/pipeline/ingest.py": "",
        "core/local/worker.py": "",
        "core/release/package.py": "",
        "core/validation/engine.py": "ENGINE = 1\n",
        "core/ops/reconcile.py": "RECONCILE = 1\n",
        "core/validation/schemas/orders.json": "{}\n",
        "core/cli/__init__.py": "import click\n",
        "core/__pycache__/engine.cpython-311.pyc": "x",
        "handlers/__init__.py": "",
        "handlers/ingest.py": "def handler(event, context): return {}\n",
        "constraints.txt": "# pins\nurllib3==8.0.0\nboto3==9.0.0\n",
        "handlers/notify.py": "def handler(event, context): return {}\n",
        "handlers/reconcile_job.py": (
            'SHIPPED_MODULES = ("core/__init__.py", "core/ops/reconcile.py")\n'
            "from core.ops.reconcile import RECONCILE\n"
        ),
    }
    for rel, text in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> BuildOptions:
    root = tmp_path_factory.mktemp("package")
    return BuildOptions(
        target=Target("arm64", "3.12"),
        out_dir=root / "out",
        project_root=fake_project(root),
        pip_args=("--no-index", "--find-links", str(fake_wheelhouse(root))),
        pin=False,
    )


@pytest.fixture(scope="module")
def built(offline: BuildOptions) -> Manifest:
    """One offline build (two pip runs) shared by the tests that only read it."""
    return build(offline)


def names(zip_path: Path) -> set[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return set(archive.namelist())


def test_offline_build_splits_layer_and_code_and_bundles_the_constrained_sdk(
    offline: BuildOptions, built: Manifest
) -> None:
    manifest = built
    out = offline.out_dir
    code = names(out / "function.zip")
    layer = names(out / "deps-layer.zip")
    assert "handlers/ingest.py" in code
    assert "core/validation/engine.py" in code
    assert "core/validation/schemas/orders.json" in code
    assert "aws_xray_sdk/__init__.py" in code
    assert "typing_extensions.py" in code
    assert not [n for n in code if n.startswith(("core/cli", "polars/"))]
    # The SDK the tests ran with travels with the code, at constraints.txt's versions.
    assert {"boto3/__init__.py", "botocore/__init__.py", "urllib3/__init__.py"} <= code
    assert "urllib3-8.0.0.dist-info/METADATA" in code
    assert not [n for n in code if n.startswith("urllib3-9")]
    project = {n for n in code if n.startswith(("core/", "handlers/"))}
    # The manifest lists exactly what the zip holds of the project: no local, release, ops or
    # Glue-only code.
    assert project == set(manifest.modules["code"])
    assert project == {
        "core/__init__.py",
        "core/bootstrap.py",
        "core/aws/clients.py",
        "core/pipeline/ingest.py",
        "core/validation/engine.py",
        "core/validation/schemas/orders.json",
        "handlers/__init__.py",
        "handlers/ingest.py",
        "handlers/notify.py",
    }
    assert manifest.modules["reconcile_wheel"] == ["core/__init__.py", "core/ops/reconcile.py"]
    assert not [n for n in code if n.endswith((".pyc", ".pyi"))]
    assert all(n.startswith("python/") for n in layer)
    assert "python/polars/__init__.py" in layer
    assert manifest.arch == "arm64"
    assert manifest.runtime == "python3.12"


def test_sizes_are_measured_from_the_zips(offline: BuildOptions, built: Manifest) -> None:
    manifest = built
    for role in ("code", "layer"):
        artifact = manifest.artifacts[role]
        path = offline.out_dir / artifact.file
        with zipfile.ZipFile(path) as archive:
            assert artifact.unzipped_bytes == sum(i.file_size for i in archive.infolist())
        assert artifact.zipped_bytes == path.stat().st_size
    assert manifest.lambda_unzipped_bytes == (
        manifest.artifacts["code"].unzipped_bytes + manifest.artifacts["layer"].unzipped_bytes
    )


def test_zips_and_wheels_are_reproducible_byte_for_byte(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "a.py").write_text("A = 1\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    first, second = tmp_path / "1.zip", tmp_path / "2.zip"
    assert deterministic_zip(source, first) == deterministic_zip(source, second) == 16
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert archive.getinfo("run.sh").external_attr >> 16 & 0o777 == 0o755
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    w1 = write_wheel(tmp_path / "w1", "x", "1.0", {"x.py": b"1"})
    w2 = write_wheel(tmp_path / "w2", "x", "1.0", {"x.py": b"1"})
    assert w1.read_bytes() == w2.read_bytes()


def test_keys_are_content_addressed(built: Manifest) -> None:
    code = built.artifacts["code"]
    assert code.key == f"orderpipe/{code.sha256[:16]}/function.zip"


def test_manifest_round_trips_and_detects_a_changed_artifact(
    offline: BuildOptions, built: Manifest, tmp_path: Path
) -> None:
    loaded = Manifest.load(offline.out_dir)
    assert loaded.artifacts == built.artifacts
    assert loaded.modules == built.modules
    copy = tmp_path / "copy"
    shutil.copytree(offline.out_dir, copy)
    (copy / "function.zip").write_bytes(b"tampered")
    with pytest.raises(PackageError, match="missing or changed"):
        Manifest.load(copy)


def test_no_manifest_says_to_run_package(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="run `orderpipe package` first"):
        Manifest.load(tmp_path)


def test_glue_wheel_holds_only_the_shipped_modules_and_installs_on_any_python(
    offline: BuildOptions, built: Manifest, tmp_path: Path
) -> None:
    manifest = built
    wheel = offline.out_dir / manifest.artifacts["reconcile_wheel"].file
    modules = {n for n in names(wheel) if ".dist-info/" not in n}
    assert modules == {"core/__init__.py", "core/ops/reconcile.py"}
    with zipfile.ZipFile(wheel) as archive:
        meta = next(archive.read(n) for n in archive.namelist() if n.endswith("/METADATA"))
    assert b"Requires-Python: >=3.9" in meta
    assert b"Requires-Dist" not in meta  # nothing for Glue to resolve: no polars, ever
    target = tmp_path / "glue-site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "core" / "ops" / "reconcile.py").read_text() == "RECONCILE = 1\n"
    assert (offline.out_dir / "reconcile_job.py").is_file()


def test_past_the_lambda_limit_fails_with_one_clear_line(tmp_path: Path) -> None:
    layer, code = tmp_path / "layer", tmp_path / "code"
    (layer / "polars").mkdir(parents=True)
    (layer / "polars" / "lib.so").write_bytes(b"x" * 900)
    (code / "core").mkdir(parents=True)
    (code / "core" / "a.py").write_bytes(b"x" * 200)
    check_limit(layer, code, 1100)  # exactly at the limit is fine
    with pytest.raises(PackageError) as err:
        check_limit(layer, code, 1099)
    message = str(err.value)
    assert "would be 0.0 MiB unzipped, over the 0.0 MiB limit for code plus layers" in message
    assert "polars" in message  # names the biggest contributors
    assert "\n" not in message


def test_a_wheel_the_registry_lacks_fails_with_one_clear_line(
    offline: BuildOptions, tmp_path: Path
) -> None:
    missing = BuildOptions(
        **{**offline.__dict__, "layer_requirements": ("no-such-dist",), "out_dir": tmp_path}
    )
    with pytest.raises(PackageError) as err:
        build(missing)
    assert "pip could not get no-such-dist for arm64/python3.12" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_target_is_refused() -> None:
    with pytest.raises(PackageError, match=r"--python must be one of 3\.12, 3\.13"):
        Target("arm64", "3.9")


def test_cli_refuses_bad_options_before_building() -> None:
    runner = CliRunner()
    bad_arch = runner.invoke(cli, ["package", "--arch", "sparc"])
    assert bad_arch.exit_code == 2
    assert "sparc" in bad_arch.output
    no_links = runner.invoke(cli, ["package", "--no-index"])
    assert no_links.exit_code == 2
    assert "--no-index needs --find-links" in no_links.output


def test_summary_reports_each_artifact_and_the_share_of_the_limit(
    offline: BuildOptions, built: Manifest
) -> None:
    manifest = built
    text = "\n".join(summary_lines(manifest, offline.out_dir))
    for artifact in manifest.artifacts.values():
        assert artifact.file in text
    assert f"of {LAMBDA_UNZIPPED_LIMIT / MIB:,.1f} MiB allowed" in text


@pytest.mark.slow
def test_real_build_fits_lambda_and_its_stripped_polars_still_runs(tmp_path: Path) -> None:
    """The real wheels for this machine's architecture; polars is abi3, so it imports here."""
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
    if arch is None:
        pytest.skip(f"no Lambda architecture matches this machine ({platform.machine()})")
    options = BuildOptions(target=Target(arch, "3.12"), out_dir=tmp_path / "out")
    try:
        manifest = build(options)
    except PackageError as exc:
        if "pip could not get" in str(exc):
            pytest.skip(f"no package registry reachable: {exc}")
        raise
    assert manifest.lambda_unzipped_bytes < LAMBDA_UNZIPPED_LIMIT
    layer = names(options.out_dir / "deps-layer.zip")
    assert any(n.startswith("python/_polars_runtime") and ".so" in n for n in layer)
    code = names(options.out_dir / "function.zip")
    assert not [n for n in code if n.startswith("polars/")]
    # boto3 and botocore ship at the versions this environment (and its tests) run.
    from importlib import metadata

    for dist in ("boto3", "botocore", "s3transfer"):
        assert f"{dist}-{metadata.version(dist)}.dist-info/METADATA" in code
    assert "aws_lambda_powertools/__init__.py" in code
    unpacked = tmp_path / "layer"
    with zipfile.ZipFile(options.out_dir / "deps-layer.zip") as archive:
        archive.extractall(unpacked)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import polars as pl, json; "
        "print(json.dumps([pl.__file__, pl.DataFrame({'a': [1, 2, 3]})['a'].sum()]))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(unpacked / "python")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where, total = json.loads(done.stdout)
    assert where.startswith(str(unpacked))
    assert total == 6
    # The function's code brings its own botocore, and that copy is the one that imports.
    code_dir = tmp_path / "code"
    with zipfile.ZipFile(options.out_dir / "function.zip") as archive:
        archive.extractall(code_dir)
    sdk_probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import boto3, botocore, json; "
        "print(json.dumps([botocore.__file__, botocore.__version__, boto3.__version__]))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", sdk_probe, str(code_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where, botocore_version, boto3_version = json.loads(done.stdout)
    assert where.startswith(str(code_dir))
    assert (botocore_version, boto3_version) == (
        metadata.version("botocore"),
        metadata.version("boto3"),
    )
