"""Print the requirements of pyproject.toml (base plus the named extras), one per line.

The Python images install these in their own layer before copying the source, so editing
the code does not invalidate the (slow) dependency layer; only editing pyproject.toml does.
Then `pip install --no-deps .` adds the package itself.

usage: python pyproject_requirements.py PYPROJECT [EXTRA ...] [--replace NAME=REQUIREMENT ...]
  --replace swaps one requirement for another (e.g. onnxruntime=onnxruntime-gpu==1.31.1 for
  the GPU variant); an empty REQUIREMENT keeps the original.
"""

from __future__ import annotations

import re
import sys
import tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise SystemExit(f"cannot parse requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    path, rest = argv[0], argv[1:]
    extras: list[str] = []
    replace: dict[str, str] = {}
    while rest:
        arg = rest.pop(0)
        if arg == "--replace":
            key, _, value = rest.pop(0).partition("=")
            if value:
                replace[_name(key)] = value
        else:
            extras.append(arg)
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    self_name = _name(project["name"])
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; known: {sorted(optional)}")
        requirements += optional[extra]
    seen: set[str] = set()
    for requirement in requirements:
        name = _name(requirement)
        if name == self_name or requirement in seen:
            continue  # a self-reference such as kubeserve[onnx] is covered by its extra
        seen.add(requirement)
        print(replace.get(name, requirement))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
