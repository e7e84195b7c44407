#!/usr/bin/env python3
"""Re-fetch the pinned API-docs assets from the npm registry into todoapp/static/docs/.

The docs pages (/docs, /redoc, /scalar) load nothing from another host, so the browser
bundles ship inside the package. This script is how they got there, and how to bump them:
edit a version below, run `python3 scripts/fetch_docs_assets.py`, review, commit.

Only the files the pages load are kept, with each package's licence files beside them.
versions.json records every package's version, its registry integrity and the SHA-256 of
each shipped file (tests/test_docs.py checks the files still match it). Needs npm.
"""

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "todoapp" / "static" / "docs"

# The upstream LICENSE of github.com/scalar/scalar: @scalar/api-reference's npm tarball
# ships none, and its package.json says "MIT". Written only when the tarball lacks one.
SCALAR_MIT = """MIT License

Copyright (c) 2023-present Scalar

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    folder: str  # under todoapp/static/docs/
    files: dict[str, str]  # path inside the tarball (under package/) -> shipped name
    licence_files: dict[str, str]
    licence_fallback: tuple[str, str] | None = None  # (SPDX id it must declare, text)


PACKAGES = (
    Package(
        name="swagger-ui-dist",
        version="5.35.0",
        folder="swagger-ui",
        files={
            "swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "swagger-ui.css": "swagger-ui.css",
            "oauth2-redirect.js": "oauth2-redirect.js",
            "favicon-32x32.png": "favicon-32x32.png",
        },
        licence_files={
            "LICENSE": "LICENSE",
            "NOTICE": "NOTICE",
            "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-bundle.js.LICENSE.txt",
        },
    ),
    Package(
        name="redoc",
        version="2.5.4",
        folder="redoc",
        files={"bundles/redoc.standalone.js": "redoc.standalone.js"},
        licence_files={
            "LICENSE": "LICENSE",
            "bundles/redoc.standalone.js.LICENSE.txt": "redoc.standalone.js.LICENSE.txt",
        },
    ),
    Package(
        name="@scalar/api-reference",
        version="1.76.0",
        folder="scalar",
        files={"dist/browser/standalone.js": "standalone.js"},
        licence_files={"LICENSE": "LICENSE"},
        licence_fallback=("MIT", SCALAR_MIT),
    ),
)


def npm(*args: str, cwd: Path | None = None) -> str:
    npm_path = shutil.which("npm")
    if npm_path is None:
        sys.exit("fetch_docs_assets: npm is not installed")
    result = subprocess.run(  # noqa: S603 - fixed argv, pinned names and versions
        [npm_path, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return result.stdout


def sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(package: Package, workdir: Path) -> dict[str, object]:
    spec = f"{package.name}@{package.version}"
    expected = json.loads(npm("view", spec, "dist.integrity", "license", "--json"))
    packed = json.loads(npm("pack", spec, "--json", "--pack-destination", str(workdir)))
    tarball = workdir / packed[0]["filename"]
    data = tarball.read_bytes()
    if sri_sha512(data) != expected["dist.integrity"]:
        sys.exit(f"fetch_docs_assets: {spec}: tarball does not match the registry's integrity")

    target = ASSETS / package.folder
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shipped: dict[str, str] = {}
    with tarfile.open(tarball, "r:gz") as archive:
        members = {m.name.removeprefix("package/"): m for m in archive.getmembers() if m.isfile()}
        wanted = {**package.files, **package.licence_files}
        for inner, name in wanted.items():
            member = members.get(inner)
            if member is None:
                if inner in package.licence_files and package.licence_fallback is not None:
                    spdx, text = package.licence_fallback
                    if expected["license"] != spdx:
                        sys.exit(f"fetch_docs_assets: {spec} now declares {expected['license']}")
                    (target / name).write_text(text)
                    shipped[name] = hashlib.sha256(text.encode()).hexdigest()
                    continue
                sys.exit(f"fetch_docs_assets: {spec} has no {inner}")
            extracted = archive.extractfile(member)
            assert extracted is not None
            content = extracted.read()
            (target / name).write_bytes(content)  # by name only: no path from the tarball
            shipped[name] = hashlib.sha256(content).hexdigest()
    return {
        "name": package.name,
        "version": package.version,
        "license": expected["license"],
        "integrity": expected["dist.integrity"],
        "folder": package.folder,
        "files": shipped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    ASSETS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        records = [fetch(package, Path(tmp)) for package in PACKAGES]
    versions = {record["folder"]: record for record in records}
    (ASSETS / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    for record in records:
        print(f"{record['name']}@{record['version']} -> todoapp/static/docs/{record['folder']}/")


if __name__ == "__main__":
    main()
