"""Run by capisan's package builder with a package's venv python, after pip installed it.

Writes one JSON object to argv[2]: the venv's site-packages, the interpreter's extension-module
suffixes, and every extension module the distribution argv[1] installed, by dotted name, with
the error its import raised (None when it imports).

The modules come from the distribution's RECORD, so extensions of its dependencies are not
counted; without a RECORD, every extension module under site-packages is.
"""

import importlib
import importlib.machinery
import importlib.metadata
import json
import os
import sys
import sysconfig


def extension_files(dist_name, site):
    try:
        dist = importlib.metadata.distribution(dist_name)
        files = [os.path.abspath(str(dist.locate_file(f))) for f in dist.files or []]
    except importlib.metadata.PackageNotFoundError:
        files = []
    if not files:
        for root, dirs, names in os.walk(site):
            dirs[:] = [d for d in dirs if d not in ("pip", "__pycache__")]
            files += [os.path.join(root, n) for n in names]
    return files


def main():
    dist_name, out = sys.argv[1], sys.argv[2]
    site = os.path.abspath(sysconfig.get_path("platlib"))
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    modules = []
    for path in sorted(extension_files(dist_name, site)):
        rel = os.path.relpath(path, site)
        if rel.startswith(".."):
            continue
        suffix = next((s for s in suffixes if rel.endswith(s)), None)
        if suffix is None:
            continue
        name = rel[: -len(suffix)].replace(os.sep, ".")
        modules.append({"name": name, "path": path, "import_error": None})
    for m in modules:
        try:
            importlib.import_module(m["name"])
        except BaseException as e:  # noqa: B036 -- any failure means "does not import"
            m["import_error"] = f"{type(e).__name__}: {e}"
    with open(out, "w") as f:
        json.dump(
            {"site_packages": site, "ext_suffixes": suffixes, "modules": modules}, f
        )


main()
