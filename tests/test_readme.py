"""The README's Python examples run as written (the front door must stay true)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks():
    text = open(README, encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_the_examples():
    assert len(_blocks()) >= 3


def test_ten_lines_gradcheck_and_viz_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example saves model.npz
    blocks = _blocks()
    namespace = {}
    exec(blocks[0], namespace)  # ten lines: trains a step and saves
    assert (tmp_path / "model.npz").exists()
    exec(blocks[1], namespace)  # viz, on the ten lines' loss and model
    gradcheck_block = next(b for b in blocks if "gradcheck(" in b)
    exec(gradcheck_block, {})
    jit_block = next(b for b in blocks if "@jit" in b)
    exec(jit_block, namespace)  # continues the ten lines
    assert namespace["train_step"].replays == 3


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_the_two_commands_are_in_the_readme_and_makefile(command):
    text = open(README, encoding="utf-8").read()
    assert command in text
    makefile = open(os.path.join(os.path.dirname(README), "Makefile")).read()
    assert f"{command.split()[1]}:" in makefile
