"""The user docs hold together: every relative link and image in README.md and docs/*.md resolves
(files, and `#anchors` to a heading of the target), the README stays short, and no doc points
outside the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors_of(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {anchor(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def relative_links(path):
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_anchor_follows_github_rules():
    assert anchor("Why the demo network differs from the lab's") == (
        "why-the-demo-network-differs-from-the-labs"
    )
    assert anchor("Skin photos: `cam_vgg16.py`") == "skin-photos-cam_vgg16py"


def test_link_finder_sees_links_and_images_but_not_code():
    sample = ROOT / "docs" / "lab.md"
    assert any(link.endswith("segmentation.md") for link in relative_links(sample))
    readme_links = relative_links(ROOT / "README.md")
    assert any(link.startswith("docs/img/") for link in readme_links)  # images count


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if not resolved.exists() or ROOT not in resolved.parents:
            broken.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in anchors_of(resolved):
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


# The folder beside a developer's checkout, which a user's clone does not have (spelt in parts so
# that this file, which never reads it, does not name it either).
OUTSIDE_FOLDER = "/".join(("..", "shared"))


def test_readme_is_short_and_docs_stay_inside_the_repository():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 220
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert OUTSIDE_FOLDER not in text, doc.name
        assert not re.search(r"\bissue \d+", text, flags=re.I), doc.name
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), doc.name
