"""bin/quality keeps the recorded run against the service when it rewrites docs/quality.md."""

from __future__ import annotations

from pathlib import Path

from bandits.simulate.quality.document import SERVICE_HEADING, kept_section


def test_the_service_section_is_kept(tmp_path: Path) -> None:
    doc = tmp_path / "quality.md"
    doc.write_text(f"# old\n\n## Targets\nold\n\n{SERVICE_HEADING} (closing the loop)\n\nrun\n")
    assert kept_section(doc) == f"\n{SERVICE_HEADING} (closing the loop)\n\nrun\n"


def test_nothing_is_kept_without_one(tmp_path: Path) -> None:
    assert kept_section(tmp_path / "missing.md") == ""
    (tmp_path / "plain.md").write_text("# old\n")
    assert kept_section(tmp_path / "plain.md") == ""
