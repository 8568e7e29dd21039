"""Run an exported classification adapter the way a hospital would without this project: the README's
loading snippet, as written (its two paths swapped), in a fresh interpreter that must import none of the
project's packages; and the project's own probabilities to compare it with."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from client_agent.model import FFAClassifier

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = (
    "client_agent",
    "cloud_server",
    "edge_aggregator",
    "fedlora",
    "protocol",
    "services",
    "tests",
)
STOCK_TEXTS = [
    "the adapter must give",
    "the same scores as the project",
    "a third, rather longer sentence here",
]


def readme_snippet() -> str:
    """The README's loading snippet: the python block that calls `get_class_from_dynamic_module`."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    found = [block for block in blocks if "get_class_from_dynamic_module" in block]
    assert len(found) == 1, "README.md must hold exactly one adapter loading snippet"
    return found[0]


def run_stock_loader(adapter: Path, base: Path, workdir: Path) -> list[dict[str, float]]:
    """The README snippet on `adapter` and `base` in a fresh interpreter: each text's label -> score."""
    code = readme_snippet()
    code, swapped = re.subn(r"^adapter = .*$", f"adapter = {str(adapter)!r}", code, flags=re.MULTILINE)
    code, swapped_base = re.subn(r"^base = .*$", f"base = {str(base)!r}", code, flags=re.MULTILINE)
    assert swapped == swapped_base == 1
    code = code.replace("print(classify(", "_readme_output = (classify(")  # keep stdout for the JSON below
    code += (
        "import json, sys\n"
        f"ours = sorted(m for m in sys.modules if m.split('.')[0] in {PROJECT_PACKAGES!r})\n"
        "assert not ours, f'the stock loader imported the project: {ours}'\n"
        f"print(json.dumps(classify({STOCK_TEXTS!r}, top_k=None)))\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "hf-modules"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    return [{item["label"]: item["score"] for item in answer} for answer in answers]


def project_probabilities(
    model: FFAClassifier, tokenizer: object, labels: Sequence[str]
) -> list[dict[str, float]]:
    """Softmax of the project's logits, one text at a time (the pipeline pads nothing)."""
    rows = []
    for text in STOCK_TEXTS:
        batch = tokenizer(text, return_tensors="pt")  # type: ignore[operator]
        probabilities = torch.softmax(model.logits(batch["input_ids"], batch["attention_mask"])[0], dim=-1)
        rows.append({labels[i]: float(p) for i, p in enumerate(probabilities)})
    return rows


def assert_same_scores(
    stock: list[dict[str, float]], ours: list[dict[str, float]], labels: Sequence[str]
) -> None:
    assert [set(row) for row in stock] == [set(labels)] * len(STOCK_TEXTS)
    for stock_row, our_row in zip(stock, ours, strict=True):
        for label in labels:
            assert stock_row[label] == pytest.approx(our_row[label], abs=1e-5)
    # Far from uniform, so that an adapter or head silently dropped would not pass.
    assert max(max(row.values()) - min(row.values()) for row in ours) > 0.05
