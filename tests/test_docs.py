"""The user docs hold together: every relative link and image in README.md and docs/*.md resolves
(files, and `#anchors` to a heading of the target), the README stays short, and no doc points
outside the repository."""

import functools
import re
import subprocess
import sys
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
    assert any(link.startswith("lab-guide.md#") for link in relative_links(sample))
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


# Words of a development story, which belongs in CHANGELOG.md: the docs say what is true now.
HISTORY_PHRASES = (
    "is now",
    "went back",
    "earlier recipe",
    "not shipped",
    "previous version",
    "earlier versions",
    "when these options were written",
    "first cut",
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_are_reference_not_history(doc):
    text = " ".join(doc.read_text(encoding="utf-8").lower().split())
    assert not [phrase for phrase in HISTORY_PHRASES if phrase in text]
    assert (ROOT / "CHANGELOG.md").is_file()


SUBCOMMANDS = ("predict", "evaluate", "explain")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def documented_commands(path):
    """Every `python SCRIPT ...` the doc shows, in code blocks (continuation lines joined) and in
    inline code: (script, subcommand or "", the flags it types). A script named later in the line
    (`bench/resume_fidelity.py cam_vgg16.py --size 64`) takes the flags that follow it."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines += CODE_SPAN.findall(re.sub(r"```.*?```", "", text, flags=re.S))
    commands = []
    for line in lines:
        words = line.split("#")[0].replace("[", " ").replace("]", " ").split()
        if "python" not in words:
            continue
        current = None
        for i, word in enumerate(words[words.index("python") + 1 :]):
            if word.endswith(".py") and (ROOT / word).is_file():
                rest = words[words.index("python") + 2 + i :]
                sub = rest[0] if rest and rest[0] in SUBCOMMANDS else ""
                current = (word, sub, set())
                commands.append(current)
            elif current and re.fullmatch(r"--[a-z][a-z0-9-]*(=\S*)?", word):
                current[2].add(word.split("=")[0])
            elif current is None:
                break  # python -m ..., or a script outside the repository
    return [(script, sub, frozenset(flags)) for script, sub, flags in commands]


# bench/ scripts that pass every flag but their own to a task script.
FORWARDS = {"bench/cam_seed_spread.py": "cam_vgg16.py"}


@functools.cache
def help_flags(script, sub=""):
    """The flags `python script [sub] --help` lists."""
    help_text = subprocess.run(
        [sys.executable, script, *([sub] if sub else []), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


def accepted_flags(script, sub):
    """The flags of `python script [sub]`: the task scripts' --help (it answers before TensorFlow
    starts). A bench/ script's: those its argparse calls spell out, its --help where it builds
    them (`f"--{side}"`), and those of the task script it forwards the rest to."""
    if not script.startswith("bench/"):
        return help_flags(script, sub)
    source = (ROOT / script).read_text()
    flags = {"--help", *re.findall(r"\"(--[a-z][a-z0-9-]*)\"", source)}
    if 'f"--{' in source:
        flags |= help_flags(script)
    if script in FORWARDS:
        flags |= help_flags(FORWARDS[script])
    return flags


def test_command_finder_reads_blocks_continuations_and_inline_code(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```bash\npython main_segmentation.py --data-dir D \\\n    --epochs 2   # --no\n```\n"
        "Run `python cam_vgg16.py explain M.keras I.png [--layer L]`, not `--epochs` alone,\n"
        "and `python bench/resume_fidelity.py cam_vgg16.py --size 64`.\n"
    )
    assert documented_commands(doc) == [
        ("main_segmentation.py", "", frozenset({"--data-dir", "--epochs"})),
        ("cam_vgg16.py", "explain", frozenset({"--layer"})),
        ("bench/resume_fidelity.py", "", frozenset()),
        ("cam_vgg16.py", "", frozenset({"--size"})),
    ]


def test_every_flag_a_documented_command_types_exists():
    unknown = {}
    for doc in DOCS:
        for script, sub, flags in documented_commands(doc):
            missing = flags - accepted_flags(script, sub)
            if missing:
                unknown.setdefault(doc.name, []).append(f"{script} {sub}: {sorted(missing)}")
    assert not unknown, unknown
