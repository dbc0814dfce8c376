"""Helpers shared by the simulation scripts (command line, output folder)."""

from __future__ import annotations

import argparse
import pathlib


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, type=pathlib.Path, help="output folder (created if missing)")
    p.add_argument("--quick", action="store_true", help="a small grid for smoke tests")
    return p


def out_dir(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
