"""The browser tests' JavaScript is installed from this folder's package files, never
committed: exact versions, a lockfile with an integrity hash for every package and no
registry address (npm fetches from the registry it is configured for)."""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_the_javascript_is_pinned_exactly_with_no_registry_address():
    package = json.loads((HERE / "package.json").read_text())
    lock_text = (HERE / "package-lock.json").read_text()
    lock = json.loads(lock_text)
    assert package["dependencies"] == {"tus-js-client": package["dependencies"]["tus-js-client"]}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in package["dependencies"].values())
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    installed = {name: entry for name, entry in lock["packages"].items() if name}
    assert (
        installed["node_modules/tus-js-client"]["version"]
        == (package["dependencies"]["tus-js-client"])
    )
    for name, entry in installed.items():
        assert entry["integrity"].startswith("sha512-"), name
        assert "resolved" not in entry, name
    assert "://" not in lock_text
    assert "omit-lockfile-registry-resolved=true" in (HERE / ".npmrc").read_text().splitlines()
