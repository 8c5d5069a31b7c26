import subprocess
import sys
from pathlib import Path

import pytest

from torchlangevin.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_gif_png_and_prints_tv(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--particles", "2000", "--steps", "600"]) == 0
    out = capsys.readouterr().out
    assert "total variation over 100 bins" in out and "noise floor" in out
    assert "share within 1e-3 of a boundary" in out
    assert (tmp_path / "langevin_dynamics.gif").stat().st_size > 10_000
    assert (tmp_path / "final.png").stat().st_size > 10_000


def test_sample_command(tmp_path, capsys):
    out_file = tmp_path / "chains.pt"
    assert main(["sample", "double-well", "--kernel", "mala", "--chains", "200", "--steps",
                 "200", "--burn-in", "50", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "ess_bulk" in text and "M chain-steps/s" in text
    assert out_file.exists()


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_example_runs(script, tmp_path):
    # the EBM and score examples train for minutes; one epoch or step (and 50 sampling steps)
    # checks that they run end to end
    quick = ["1", "50"] if script.startswith(("ebm_", "score_")) else []
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script),
                           str(tmp_path / "out.png"), *quick], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.png").exists()


def test_ebm_demo_command_runs_the_ladder_recipe(tmp_path, capsys, monkeypatch):
    import functools

    from torchlangevin.score import demo

    # the real recipe, on a short ladder with few chains (the defaults take ~80 s)
    monkeypatch.setattr(demo, "run_energy_toy", functools.partial(
        demo.run_energy_toy, n_levels=3, n_steps_each=3, long_steps=2, n_sets=1))
    assert main(["ebm-demo", "--data", "grid", "--train-steps", "2", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fresh chains (annealed MALA)" in out and "12 gradients per sample" in out
    assert (tmp_path / "energy_grid.png").exists()


def test_score_demo_command_runs_on_an_energy(tmp_path, capsys, monkeypatch):
    import functools

    from torchlangevin.score import demo

    monkeypatch.setattr(demo, "run_toy", functools.partial(
        demo.run_toy, n_levels=3, n_steps_each=3, n_sets=1))
    assert main(["score-demo", "--data", "rings", "--model", "energy", "--train-steps", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "annealed MALA" in out and "predictor-corrector" in out
    assert (tmp_path / "score_rings.png").exists()


def test_ebm_demo_command_runs(tmp_path, capsys):
    assert main(["ebm-demo", "--data", "rings", "--recipe", "pcd", "--epochs", "1",
                 "--sample-steps", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "persistent chains" in out and "fresh chains" in out and "floor" in out
    assert (tmp_path / "rings_energy.png").exists()


def test_llc_demo_command_runs_and_resumes_from_its_store(tmp_path, capsys):
    args = ["llc-demo", "--draws", "20", "--epochs", "20", "--store", str(tmp_path / "s.zarr")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "LLC of a 1,185-parameter MLP" in first and "R-hat" in first
    assert main(args) == 0  # the finished store is returned from cache: the same numbers
    assert capsys.readouterr().out.split("(")[0] == first.split("(")[0]
