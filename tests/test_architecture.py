"""The README's layer diagram is drawn from the import contract that `make lint` checks.

Run this file as a script to print the diagram for the README after changing the contract.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["importlinter"]["contracts"]


def layer_diagram() -> str:
    """Each layers contract as a column, top to bottom: a layer imports only those below it."""
    blocks = []
    for contract in contracts():
        if contract["type"] != "layers":
            continue
        container = contract.get("containers", [""])[0]
        lines = [f"# {contract['name']}"]
        for index, layer in enumerate(contract["layers"]):
            modules = [m.strip() for m in layer.replace(":", "|").split("|")]
            named = [f"{container}.{m}" if container else m for m in modules]
            lines.append("  ·  ".join(named))
            if index < len(contract["layers"]) - 1:
                lines.append("      ↓")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def test_the_readme_shows_the_layers_the_contract_checks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert layer_diagram() in readme, (
        "The README's layer diagram is out of date; paste the output of "
        "`python tests/test_architecture.py` into its Architecture section."
    )


def test_the_contract_keeps_annotate_below_training_and_the_engine_free_of_django():
    by_type: dict[str, list[dict]] = {}
    for contract in contracts():
        by_type.setdefault(contract["type"], []).append(contract)
    layers = by_type["layers"][0]["layers"]
    assert layers.index("training") < layers.index("annotate") < layers.index("registry")
    (forbidden,) = by_type["forbidden"]
    assert forbidden["source_modules"] == ["training.engine"]
    assert {"django", "annotate", "registry"} <= set(forbidden["forbidden_modules"])
    assert by_type["acyclic_siblings"], "the no-cycles contract is gone"


def test_annotate_and_the_registry_import_nothing_from_training():
    for app in ("annotate", "registry"):
        for path in (ROOT / app).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "from training" not in text and "import training" not in text, path


if __name__ == "__main__":
    sys.stdout.write(layer_diagram() + "\n")
