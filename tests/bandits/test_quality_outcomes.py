"""bin/quality saves every run's outcome as JSON, renders docs/quality.md again from it
without running anything, and its quick mode never touches the published document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from bandits.simulate.cli import main
from bandits.simulate.quality.command import PUBLISHED
from bandits.simulate.quality.outcomes import FORMAT, Saved, load, save
from bandits.simulate.quality.plan import QUICK, sections
from bandits.simulate.runner import Outcome

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin" / "quality"


def made_up(seed: int = 0) -> Saved:
    """Outcomes of the quick plan's shape, drawn at random instead of run."""
    rng = np.random.default_rng(seed)
    at = np.array([1, 50, 100], np.intp)
    results = {
        part.key: {
            agent.label: [
                Outcome(
                    agent.label,
                    s,
                    at,
                    np.cumsum(rng.random(3)),
                    int(rng.integers(100, 200)),
                    int(rng.integers(0, 100)),
                    float(rng.random() * 50),
                    None if part.key in ("forum", "dense") else float(rng.random()),
                    float(rng.random()),
                )
                for s in range(part.seeds)
            ]
            for agent in part.agents
        }
        for part in sections(QUICK)
    }
    return Saved(QUICK, results, ["- command: `bin/quality --quick`"], 0.3)


def test_saved_outcomes_load_back_bit_for_bit(tmp_path: Path) -> None:
    saved = made_up()
    save(saved, tmp_path / "out.json")
    again = load(tmp_path / "out.json")
    assert (again.plan, again.provenance, again.minutes) == (QUICK, saved.provenance, 0.3)
    assert list(again.results) == list(saved.results)
    for key, groups in saved.results.items():
        assert list(again.results[key]) == list(groups)
        for label, outs in groups.items():
            for a, b in zip(again.results[key][label], outs, strict=True):
                assert (a.label, a.seed, a.impressions, a.clicks) == (
                    b.label,
                    b.seed,
                    b.impressions,
                    b.clicks,
                )
                assert (a.expected_clicks, a.bound, a.seconds) == (
                    b.expected_clicks,
                    b.bound,
                    b.seconds,
                )
                assert np.array_equal(a.at, b.at) and np.array_equal(a.regret, b.regret)


def _edited(tmp_path: Path, edit) -> Path:
    path = tmp_path / "out.json"
    save(made_up(), path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="something else"), "not a bin/quality outcomes file"),
        (lambda d: d.pop("plan"), "malformed outcomes"),
        (lambda d: d["outcomes"].pop("dense"), "sections .* differ from the plan's"),
        (lambda d: d["outcomes"]["classic"].pop("greedy"), "classic: recommenders"),
        (
            lambda d: d["outcomes"]["delay"]["flat_ts"]["runs"].pop(),
            r"delay, flat_ts: seeds are not 0-3",
        ),
    ],
)
def test_a_file_that_is_not_whole_saved_outcomes_is_refused(tmp_path, edit, message) -> None:
    with pytest.raises(ValueError, match=message):
        load(_edited(tmp_path, edit))


def test_text_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.json").write_text("# quality\n")
    with pytest.raises(ValueError, match="is not JSON"):
        load(tmp_path / "out.json")


def _published() -> tuple[bytes, int]:
    return PUBLISHED.read_bytes(), PUBLISHED.stat().st_mtime_ns


@pytest.mark.parametrize(
    "published",
    [
        ["--doc", str(PUBLISHED)],
        ["--img", str(PUBLISHED.parent / "img")],
        ["--outcomes", str(PUBLISHED.parent / "quality-outcomes.json")],
    ],
)
def test_quick_results_are_refused_for_the_published_files(tmp_path, capsys, published) -> None:
    before = _published()
    save(made_up(), tmp_path / "quick.json")
    given = ["--doc", str(tmp_path / "q.md"), "--img", str(tmp_path / "img")]
    for mode in (["--quick"], ["--render", str(tmp_path / "quick.json")]):
        if mode[0] == "--render" and published[0] == "--outcomes":
            continue  # --render writes no outcomes (refused below)
        with pytest.raises(SystemExit) as exit_info:
            main(["quality", *mode, *given, *published])
        assert exit_info.value.code == 2
        assert (
            f"never replace docs/quality.md, its plots or its outcomes: give another {published[0]}"
            in capsys.readouterr().err
        )
    assert _published() == before
    assert not (tmp_path / "q.md").exists() and not (tmp_path / "img").exists()


def test_render_saves_no_outcomes(tmp_path, capsys) -> None:
    save(made_up(), tmp_path / "quick.json")
    args = ["--doc", str(tmp_path / "q.md"), "--outcomes", str(tmp_path / "o.json")]
    with pytest.raises(SystemExit):
        main(["quality", "--render", str(tmp_path / "quick.json"), *args])
    assert "--render runs nothing" in capsys.readouterr().err
    assert not (tmp_path / "q.md").exists()


def test_quick_results_render_to_a_new_temporary_folder_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    save(made_up(), tmp_path / "quick.json")
    before = _published()
    assert main(["quality", "--render", str(tmp_path / "quick.json")]) == 0
    (folder,) = tmp_path.glob("bin-quality-quick-*")
    assert (folder / "quality.md").read_text().startswith("# Quality evidence for `bandits/`")
    assert len(list((folder / "img").iterdir())) == 5
    assert _published() == before


def test_render_names_a_missing_file(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["quality", "--render", str(tmp_path / "none.json"), "--doc", str(tmp_path / "q.md")])
    assert f"cannot read {tmp_path / 'none.json'}" in capsys.readouterr().err


def _bin_quality(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp), "VENV": sys.prefix}
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, env=env, cwd=tmp, check=True
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[bytes, int]]:
    """``bin/quality --quick`` as a person runs it: its folder, and docs/quality.md before."""
    tmp = tmp_path_factory.mktemp("quick")
    before = _published()
    _bin_quality("--quick", tmp=tmp)
    (folder,) = tmp.glob("bin-quality-quick-*")
    return folder, before


def test_quick_mode_leaves_the_published_document_alone(quick_run) -> None:
    folder, before = quick_run
    assert _published() == before
    assert not (ROOT / "docs" / "quality-outcomes.json").exists()
    assert (folder / "quality.md").read_text().startswith("# Quality evidence for `bandits/`")
    assert {p.name for p in (folder / "img").iterdir()} == {
        f"{key}_regret.png" for key in ("classic", "delay", "lowctr", "forum", "dense")
    }


def test_a_quick_run_saves_its_outcomes_with_their_provenance(quick_run) -> None:
    folder, _ = quick_run
    saved = load(folder / "quality-outcomes.json")
    assert json.loads((folder / "quality-outcomes.json").read_text())["format"] == FORMAT
    assert saved.plan == QUICK
    assert saved.provenance[0] == "- command: `bin/quality --quick`"
    assert any(line.startswith("- commit: `") for line in saved.provenance)
    doc = (folder / "quality.md").read_text()
    assert "\n".join(saved.provenance) + f"\n- wall time: {saved.minutes:.1f} min\n" in doc


def test_rendering_the_saved_outcomes_gives_the_same_document(quick_run) -> None:
    folder, _ = quick_run
    doc = folder / "quality.md"
    written = doc.read_bytes()
    for png in (folder / "img").iterdir():
        png.unlink()
    # bin/quality works from the repository's root: paths outside it are given absolute.
    result = _bin_quality(
        "--render", str(folder / "quality-outcomes.json"), "--doc", str(doc), tmp=folder
    )
    assert doc.read_bytes() == written
    assert "no runs" in result.stderr and "runs on" not in result.stderr
    assert len(list((folder / "img").iterdir())) == 5


def test_help_describes_the_modes() -> None:
    out = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--quick", "--render OUTCOMES.json", "--outcomes", "--doc", "--img", "--jobs"):
        assert option in out
    assert "never to docs/quality.md" in " ".join(out.split())
