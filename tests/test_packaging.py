"""`pip install .`: the wheel carries the docs assets, the web front end and the
migrations, and an app served from it (nothing of the source tree on its path) serves
them, large ones compressed and with caching headers."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from tests.conftest import ROOT, migrate
from tests.live import LiveServer, app_environment

BUNDLE = "static/docs/swagger-ui/swagger-ui-bundle.js"


def _pip(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        check=True,
        timeout=300,
    )


def _assets() -> list[str]:
    """Every file of todoapp/static and todoapp/web (but dotfiles), as in the wheel."""
    return sorted(
        path.relative_to(ROOT).as_posix()
        for tree in ("static", "web")
        for path in (ROOT / "todoapp" / tree).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
    )


def test_the_wheel_serves_its_assets_compressed_with_caching_headers(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    for tree in ("todoapp", "migrations"):
        shutil.copytree(ROOT / tree, source / tree, ignore=shutil.ignore_patterns("__pycache__"))
    # Built as `pip install .` builds it, without the network (setuptools is pinned in
    # requirements-dev.txt), then installed into a directory of its own.
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", ".", cwd=source)
    [wheel] = (source / "dist").glob("todoapp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(_assets()) <= names
    assert "todoapp/migrations/env.py" in names
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp_path)

    run = tmp_path / "run"  # an empty working directory: no source tree in reach
    run.mkdir()
    database = f"sqlite:///{run / 'app.db'}"
    migrate(database)
    settings = {"DATABASE_URL": database, "PYTHONPATH": str(site), "DRAIN_SECONDS": "0"}
    where = subprocess.run(
        [sys.executable, "-c", "import todoapp; print(todoapp.__file__)"],
        cwd=run,
        env=app_environment(settings),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where

    server = LiveServer(settings, tmp_path / "server.log", cwd=run)
    try:
        server.wait_ready()  # the head revision is known: the migrations came along
        with httpx.Client(base_url=server.url, timeout=30.0, trust_env=False) as client:
            docs = client.get("/docs")
            assert docs.status_code == 200
            assert f"/{BUNDLE}" in docs.text
            original = (ROOT / "todoapp" / BUNDLE).read_bytes()

            packed = client.get(f"/{BUNDLE}", headers={"Accept-Encoding": "gzip"})
            assert packed.status_code == 200
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["vary"] == "Accept-Encoding"
            assert packed.headers["cache-control"] == "public, max-age=3600"
            assert packed.headers["content-type"].startswith("text/javascript")
            assert packed.content == original  # httpx decompressed it
            assert packed.num_bytes_downloaded < len(original) / 2

            plain = client.get(f"/{BUNDLE}", headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200
            assert "content-encoding" not in plain.headers
            assert plain.content == original
            assert plain.headers["cache-control"] == "public, max-age=3600"
            assert plain.headers["etag"] != packed.headers["etag"]

            refused = client.get(f"/{BUNDLE}", headers={"Accept-Encoding": "gzip;q=0, br"})
            assert "content-encoding" not in refused.headers

            # Revalidation: each variant's own ETag gives a 304 without a body.
            for etag, encoding in ((packed.headers["etag"], "gzip"), (plain.headers["etag"], "")):
                again = client.get(
                    f"/{BUNDLE}", headers={"Accept-Encoding": encoding, "If-None-Match": etag}
                )
                assert again.status_code == 304
                assert again.content == b""
                assert again.headers["cache-control"] == "public, max-age=3600"

            # A small file goes as it is.
            icon = client.get("/static/docs/swagger-ui/favicon-32x32.png")
            assert icon.status_code == 200
            assert "content-encoding" not in icon.headers
    finally:
        server.stop()
