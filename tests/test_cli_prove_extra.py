"""``ramodel prove`` without SymPy names the extra to install instead of an ImportError."""

from __future__ import annotations

import importlib.util

from ramodel import cli


def test_prove_without_sympy_names_the_proofs_extra(monkeypatch, capsys):
    real = importlib.util.find_spec

    def fake(name, *args, **kwargs):
        return None if name == "sympy" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    rc = cli.main(["prove", "--symbolic-only"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "ramodel[proofs]" in err and "SymPy" in err
