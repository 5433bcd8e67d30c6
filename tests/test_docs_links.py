"""Every relative link and anchor in the repository's Markdown resolves.

Links are checked as GitHub renders them: a path is relative to the file
that holds the link (a leading ``/`` means the repository root), and an
anchor must be the slug of a heading of the target Markdown file. External
links (``http:``, ``https:``, ``mailto:`` ...) are not fetched."""
import re
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Set
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
# folders that hold generated or installed files, never docs of ours
SKIP_DIRS = {'.git', '.venv', '.pytest_cache', 'work_dirs', 'data',
             'node_modules', 'build', 'dist'}

FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
# a code span ends at its closing backticks or, unclosed, at a blank line
CODE_SPAN = re.compile(r'(`+)((?:(?!\n[ \t]*\n).)+?)\1', re.DOTALL)
# [text](target) and ![alt](target); text may hold one level of brackets
INLINE_LINK = re.compile(
    r'!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[^)]*)?\)')
REFERENCE_DEF = re.compile(r'^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)', re.M)
HTML_LINK = re.compile(r'<(?:a|img)\b[^>]*?\b(?:href|src)="([^"]*)"', re.I)
HTML_ANCHOR = re.compile(r'<a\b[^>]*?\b(?:name|id)="([^"]*)"', re.I)
ATX_HEADING = re.compile(
    r'^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$')
SETEXT_UNDERLINE = re.compile(r'^ {0,3}(=+|-+)[ \t]*$')
# lines that a setext underline cannot turn into a heading
PARAGRAPH_START = re.compile(r'^ {0,3}([#>|*+-]|\d+[.)])')
EXTERNAL = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:|^//')


class BrokenLink(NamedTuple):
    file: str
    line: int
    link: str
    reason: str

    def __str__(self):
        return f'{self.file}:{self.line}: ({self.link}) {self.reason}'


def markdown_files(root: Path) -> List[Path]:
    """The Markdown files git knows in ``root`` (tracked, or new and not
    ignored) when ``root`` is a checkout's top folder; otherwise every
    ``*.md`` below ``root`` outside ``SKIP_DIRS``."""
    root = root.resolve()
    names = _git_markdown_files(root)
    if names is None:
        names = [str(p.relative_to(root)) for p in root.rglob('*.md')
                 if not SKIP_DIRS.intersection(p.relative_to(root).parts)]
    return sorted(root / n for n in set(names) if (root / n).is_file())


def _git_markdown_files(root: Path) -> Optional[List[str]]:
    """``git ls-files`` of the ``*.md`` files, or None when ``root`` is not
    the top folder of a git checkout (or git is missing)."""
    def git(*args: str) -> str:
        return subprocess.run(['git', *args], cwd=root, capture_output=True,
                              check=True).stdout.decode()
    try:
        if Path(git('rev-parse', '--show-toplevel').strip()).resolve() != root:
            return None
        listing = git('ls-files', '--cached', '--others',
                      '--exclude-standard', '-z', '--', '*.md')
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in listing.split('\0') if name]


def _outside_code(text: str) -> List[str]:
    """The lines of ``text`` with fenced blocks blanked and code spans
    emptied, so that code that looks like a link or heading is neither;
    line numbers stay those of the file."""
    lines, fence = [], None
    for line in text.split('\n'):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0] * len(match.group(1))
            lines.append('')
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip(
                    fence[0]).strip():
                fence = None
            lines.append('')
        else:
            lines.append(line)
    joined = CODE_SPAN.sub(
        lambda m: ' ' + '\n' * m.group(0).count('\n'), '\n'.join(lines))
    return joined.split('\n')


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text lowercased,
    every character that is not a letter, digit, ``_``, ``-`` or space
    dropped, spaces turned into ``-``."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # links: text
    # HTML tags render as nothing, except inside code spans
    text = ''.join(
        piece.strip('`') if piece.startswith('`')
        else re.sub(r'<[^>]+>', '', piece)
        for piece in re.split(r'(`+.+?`+)', text))
    text = re.sub(r'[^\w\- ]', '', text.strip().lower())
    return text.replace(' ', '-')


def heading_anchors(text: str) -> Set[str]:
    """Every anchor of a Markdown text: heading slugs, the second and later
    of equal slugs numbered ``-1``, ``-2`` ..., and HTML ``name``/``id``."""
    lines = text.split('\n')
    code_free = _outside_code(text)
    headings = []
    for i, line in enumerate(code_free):
        if ATX_HEADING.match(line):  # the text with its code spans
            headings.append(ATX_HEADING.match(lines[i]).group(2) or '')
        elif (SETEXT_UNDERLINE.match(line) and i > 0
              and code_free[i - 1].strip()
              and not PARAGRAPH_START.match(code_free[i - 1])):
            headings.append(lines[i - 1])
    anchors: Set[str] = set()
    seen: Dict[str, int] = {}
    for heading in headings:
        slug = github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    anchors.update(a.lower() for a in HTML_ANCHOR.findall(text))
    return anchors


def links_in(text: str) -> Iterable[tuple]:
    """(line number, target) of every inline, reference-definition and
    HTML link outside code."""
    for number, line in enumerate(_outside_code(text), start=1):
        for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_LINK):
            for match in pattern.finditer(line):
                yield number, match.group(1).strip('<>')


def broken_links(root: Path,
                 files: Optional[Iterable[Path]] = None) -> List[BrokenLink]:
    """Every relative link of ``files`` (default: ``markdown_files(root)``)
    whose path does not exist inside ``root``, or whose anchor is not a
    heading of its Markdown target."""
    root = root.resolve()
    anchors_of: Dict[Path, Set[str]] = {}
    broken = []
    for path in (markdown_files(root) if files is None else files):
        path = path.resolve()
        name = str(path.relative_to(root))
        for line, link in links_in(path.read_text(encoding='utf-8')):
            if EXTERNAL.match(link):
                continue
            target, _, anchor = link.partition('#')
            target = unquote(target)
            if not target:
                resolved = path
            elif target.startswith('/'):
                resolved = (root / target.lstrip('/')).resolve()
            else:
                resolved = (path.parent / target).resolve()
            if resolved != root and root not in resolved.parents:
                broken.append(BrokenLink(name, line, link,
                                         'points outside the repository'))
            elif not resolved.exists():
                broken.append(BrokenLink(name, line, link, 'no such file'))
            elif anchor and resolved.suffix.lower() == '.md':
                if resolved not in anchors_of:
                    anchors_of[resolved] = heading_anchors(
                        resolved.read_text(encoding='utf-8'))
                if unquote(anchor).lower() not in anchors_of[resolved]:
                    broken.append(BrokenLink(
                        name, line, link,
                        f'no heading with anchor #{anchor} in '
                        f'{resolved.relative_to(root)}'))
    return broken


def test_every_relative_link_and_anchor_in_the_markdown_files_resolves():
    files = markdown_files(REPO)
    names = {str(f.relative_to(REPO)) for f in files}
    assert {'README.md', 'docs/README.md'} <= names, sorted(names)
    broken = broken_links(REPO, files)
    assert not broken, 'broken Markdown links:\n' + '\n'.join(
        map(str, broken))


GUIDE = """# Guide

## Step one: install (`make`)

## Step one: install (`make`)

Title
-----

<a name="custom"></a>
"""

# line numbers matter: the broken links sit on lines 17-19 and 21
LINKING_PAGE = """# Top

## Duplicate

## Duplicate

Good: [guide](docs/guide.md), [step](docs/guide.md#step-one-install-make),
[second step](docs/guide.md#step-one-install-make-1),
[setext](docs/guide.md#title), [html anchor](docs/guide.md#custom),
[own](#duplicate-1), ![pic](image.png), [folder](docs/),
[root-relative](/docs/guide.md), [web](https://example.com/x#y),
[mail](mailto:a@b.c), `[in code](missing-in-code.md)`.
```markdown
[in a fence](missing-in-fence.md)
```

Bad: [gone](docs/missing.md), [bad anchor](docs/guide.md#step-two),
[own anchor](#duplicate-2), ![lost](images/lost.png),
[escape](../outside.md)

[ref]: docs/nothing.md
"""


def test_the_checker_reports_missing_files_and_anchors_and_passes_good_links(
        tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'guide.md').write_text(GUIDE)
    (tmp_path / 'image.png').write_bytes(b'')
    (tmp_path / 'README.md').write_text(LINKING_PAGE)
    broken = broken_links(tmp_path, [tmp_path / 'README.md',
                                     tmp_path / 'docs' / 'guide.md'])
    assert [(b.file, b.line, b.link) for b in broken] == [
        ('README.md', 17, 'docs/missing.md'),
        ('README.md', 17, 'docs/guide.md#step-two'),
        ('README.md', 18, '#duplicate-2'),
        ('README.md', 18, 'images/lost.png'),
        ('README.md', 19, '../outside.md'),
        ('README.md', 21, 'docs/nothing.md'),
    ], '\n'.join(map(str, broken))
    assert str(broken[1]).endswith(
        'no heading with anchor #step-two in docs/guide.md')
    assert broken[4].reason == 'points outside the repository'


def test_github_anchor_drops_punctuation_and_code_marks():
    assert github_anchor(
        'Serving (`MultiTaskSegmentor`, `tools/serve.py`)'
    ) == 'serving-multitasksegmentor-toolsservepy'
    assert github_anchor("The paper's ablations and baselines as arguments"
                         ) == 'the-papers-ablations-and-baselines-as-arguments'
    assert github_anchor('A 2-minute smoke run on your own data'
                         ) == 'a-2-minute-smoke-run-on-your-own-data'
    assert github_anchor('Data: `data/vtab-1k/<task>/`'
                         ) == 'data-datavtab-1ktask'
    assert github_anchor('See [the guide](x.md) now') == 'see-the-guide-now'


def test_markdown_files_skip_installed_and_generated_folders(tmp_path):
    for name in ('README.md', 'docs/a.md', '.venv/lib/pkg/README.md',
                 'work_dirs/run/notes.md', 'data/set/README.md'):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('# x\n')
    found = [str(p.relative_to(tmp_path)) for p in markdown_files(tmp_path)]
    assert found == ['README.md', 'docs/a.md']
