"""``ramodel families``: the registered skip families (:mod:`ramodel.mappings`) and their attributes.

Only parsing and printing: the work is done by the library functions named in the help.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping
from typing import Any

from ._common import EXIT_OK, CLIError, _json_text, _key_value, _print

NAME = 'families'
HELP = 'list the registered skip families and their attributes'
DESCRIPTION = (
    'List the skip-mapping families of ramodel.mappings with their parameters and the attributes each '
    'declares (at the default parameters, or at --param values).'
)
EXAMPLES = """\
examples:
  ramodel families
  ramodel families correlation --param kind=banded --param bandwidth=2
  ramodel families --import mypkg.skips householder --json"""


def configure(p: argparse.ArgumentParser) -> None:
    """Add the options of ``ramodel families`` to ``p``."""
    p.add_argument("names", nargs="*", metavar="NAME", help="only these families (default all)")
    p.add_argument("--param", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="parameter values for the attributes (needs exactly one NAME)")
def _family_dict(name: str, params: Mapping[str, Any]) -> dict:
    from .. import mappings

    fam = mappings.get(name)
    out = {
        "name": name,
        "doc": (fam.doc.strip().splitlines() or [""])[0],
        "params": {p: {"kind": s.kind, "default": s.default, "valid": s.interval(), "doc": s.doc}
                   for p, s in fam.params.items()},
        "at": dict(params) if params else "defaults",
    }
    try:
        out["attributes"] = list(fam.attributes(**params))
    except (ValueError, TypeError) as exc:
        if params:
            raise CLIError(f"family {name!r}: {exc}") from None
        out["attributes"], out["error"] = None, f"{type(exc).__name__}: {exc}"
    return out


def run(args: argparse.Namespace) -> int:
    from .. import mappings

    names = list(args.names) or list(mappings.families())
    params = dict(args.param or [])
    if params and len(names) != 1:
        raise CLIError("--param needs exactly one family NAME")
    for name in names:
        mappings.get(name)  # an unknown name raises, listing the registered ones
    items = [_family_dict(n, params) for n in names]
    if args.json:
        _print(_json_text({"command": "families", "families": items}))
        return EXIT_OK
    lines = []
    for it in items:
        at = "" if it["at"] == "defaults" else " at " + ", ".join(f"{k}={v!r}" for k, v in it["at"].items())
        lines.append(f"{it['name']}: {it['doc']}" if it["doc"] else it["name"])
        if it["attributes"] is None:
            lines.append(f"    attributes: n/a ({it['error']})")
        else:
            lines.append(textwrap.fill(", ".join(it["attributes"]) or "(none)", width=100,
                                       initial_indent=f"    attributes{at}: ", subsequent_indent=" " * 8))
        for p, s in it["params"].items():
            doc = f": {s['doc']}" if s["doc"] else ""
            lines.append(f"    {p} ({s['kind']}, default {s['default']!r}, {s['valid']}){doc}")
    lines.append("also: scaled(NAME) and scaled(NAME, norm=frobenius) of any family (ramodel.mappings.scaled)")
    _print("\n".join(lines))
    return EXIT_OK
