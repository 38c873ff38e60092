"""`python -m training.engine`: trains, evaluates and generates from JSONL; bad input exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.tiny import save_tiny_llama, separable_rows
from training.engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--max-length", "32", "--max-prompt-length", "16", "--precision", "fp32"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in separable_rows(24)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dpo_then_generate_with_the_adapter(base, pairs_file, tmp_path, capsys):
    code = main(["dpo", "--data", str(pairs_file), "--base", str(base), "--out",
                 str(tmp_path / "dpo"), "--max-steps", "3", "--lr", "0.01", *SMALL])  # fmt: skip
    summary = capsys.readouterr().out
    assert code == 0
    assert summary.startswith("dpo: 3 steps in") and str(tmp_path / "dpo") in summary
    assert (tmp_path / "dpo" / "adapter_model.safetensors").exists()

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "w1 w2"}\n{"messages": [{"role": "user", "content": "w3"}]}\n')
    code = main(["generate", "--prompts", str(prompts), "--base", str(base), "--adapter",
                 str(tmp_path / "dpo"), "--out", str(tmp_path / "gen.jsonl"), "--n", "2",
                 "--max-new-tokens", "5"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert [len(r["samples"]) for r in records] == [2, 2]
    assert all(sample["token_count"] <= 5 for r in records for sample in r["samples"])


def test_reward_then_evaluate(base, pairs_file, tmp_path, capsys):
    code = main(["reward", "--data", str(pairs_file), "--base", str(base), "--out",
                 str(tmp_path / "rm"), "--max-steps", "10", "--lr", "0.01", *SMALL])  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.startswith("reward: 10 steps")
    code = main(["evaluate", "--reward-model", str(tmp_path / "rm"), "--data", str(pairs_file)])
    assert code == 0
    assert "evaluate: 24 pairs, accuracy" in capsys.readouterr().out


def test_rows_that_are_no_pair_are_skipped_with_a_warning_and_empty_answers_train(
    base, pairs_file, tmp_path, capsys
):
    data = tmp_path / "published.jsonl"
    data.write_text(pairs_file.read_text()
                    + '{"prompt": "w1", "chosen": "", "rejected": "bad"}\n'
                    + '{"prompt": "w1", "chosen": "good"}\n')  # fmt: skip
    code = main(["dpo", "--data", str(data), "--base", str(base),
                 "--out", str(tmp_path / "o"), "--max-steps", "1", *SMALL])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: skipped" in captured.err and "line 26" in captured.err
    assert "1 pairs have an empty answer; kept" in captured.err


def test_a_file_with_no_usable_row_exits_2_naming_the_line(base, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "w1", "chosen": "good"}\n')
    code = main(["dpo", "--data", str(data), "--base", str(base), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "line 1" in capsys.readouterr().err


def test_bad_setting_exits_2_with_a_fix(base, pairs_file, tmp_path, capsys):
    code = main(["dpo", "--data", str(pairs_file), "--base", str(base), "--out",
                 str(tmp_path / "o"), "--beta", "-1"])  # fmt: skip
    assert code == 2
    assert "beta=-1.0: must be positive" in capsys.readouterr().err


def test_missing_packaged_model_exits_2(pairs_file, tmp_path, capsys):
    code = main(["dpo", "--data", str(pairs_file), "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "empty-cache")])  # fmt: skip
    assert code == 2
    assert "prepare_models" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.engine", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0
    assert "reward" in result.stdout and "dpo" in result.stdout


def test_config_file_values_are_used(base, pairs_file, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"max_steps": 2, "beta": 0.3, "lora": {"r": 4, "alpha": 8}}))
    code = main(["dpo", "--data", str(pairs_file), "--base", str(base), "--out",
                 str(tmp_path / "dpo"), "--config", str(config), *SMALL])  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "dpo" / "tandem_config.json").read_text())
    assert (saved["beta"], saved["lora"]["r"], saved["max_steps"]) == (0.3, 4, 2)


def test_sft_reads_demonstrations_says_what_it_skipped_and_saves_an_adapter(base, tmp_path, capsys):
    data = tmp_path / "sft.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": r.prompt},
                {"role": "assistant", "content": r.chosen},
            ]
        }
        for r in separable_rows(8)
    ]
    rows += [{"prompt": "w1", "completion": ""}, {"prompt": "w1"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["sft", "--data", str(data), "--base", str(base), "--out", str(tmp_path / "sft"),
                 "--max-steps", "2", "--no-packing", *SMALL])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("sft: 2 steps in") and "demonstrations/s" in captured.out
    assert "warning: skipped" in captured.err and "line 10" in captured.err
    assert "1 demonstrations have an empty completion; kept" in captured.err
    saved = json.loads((tmp_path / "sft" / "tandem_config.json").read_text())
    assert (saved["type"], saved["packing"]) == ("SFTConfig", False)
    assert (tmp_path / "sft" / "adapter_model.safetensors").exists()


def test_kto_reads_scored_answers_with_the_threshold_given(base, tmp_path, capsys):
    data = tmp_path / "ratings.jsonl"
    rows = [
        {"prompt": r.prompt, "completion": answer, "score": score}
        for r in separable_rows(8)
        for answer, score in ((r.chosen, 7), (r.rejected, 2))
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code = main(["kto", "--data", str(data), "--base", str(base), "--out", str(tmp_path / "kto"),
                 "--max-steps", "2", "--desirable-score", "6", *SMALL])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("kto: 2 steps in") and "answers/s" in captured.out
    saved = json.loads((tmp_path / "kto" / "tandem_config.json").read_text())
    assert (saved["type"], saved["desirable_score"]) == ("KTOConfig", 6)
    info = json.loads((tmp_path / "kto" / "tandem_artifact.json").read_text())
    assert info["desirable"] == 8


def test_kto_bad_setting_exits_2_with_a_fix(base, tmp_path, capsys):
    data = tmp_path / "ratings.jsonl"
    data.write_text('{"prompt": "w1", "completion": "good", "label": true}\n')
    code = main(["kto", "--data", str(data), "--base", str(base), "--out", str(tmp_path / "o"),
                 "--desirable-score", "9"])  # fmt: skip
    assert code == 2
    assert "desirable_score=9" in capsys.readouterr().err
