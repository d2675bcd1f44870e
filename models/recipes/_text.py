"""Real English sentences shipped with Python and in wheels, and document pages rendered from them.

Sentence pool (deterministic, de-duplicated, in a fixed shuffled order): the prose of scikit-learn's dataset
descriptions (``sklearn/datasets/descr/*.rst``, read as files) and the first sentence of the docstrings of a
fixed list of standard-library modules; 6-40 words, ASCII, no URLs. Callers split the pool into disjoint
calibration and evaluation slices.

Pages: sentences word-wrapped in matplotlib's bundled fonts (DejaVu Sans/Serif/Mono, STIX, Computer Modern) on
a slightly tinted background, optionally with a photo and a caption, then a mild blur and sensor-like noise.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

import numpy as np
from _build import package_file
from PIL import Image, ImageDraw, ImageFilter, ImageFont

STDLIB_MODULES = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "colorsys",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "json",
    "keyword",
    "linecache",
    "locale",
    "logging",
    "lzma",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "profile",
    "pstats",
    "pydoc",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "runpy",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "symtable",
    "tabnanny",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "token",
    "tokenize",
    "trace",
    "traceback",
    "tracemalloc",
    "types",
    "typing",
    "unittest",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "webbrowser",
    "zipapp",
    "zipfile",
    "zipimport",
)
SKLEARN_DESCR = (
    "breast_cancer",
    "california_housing",
    "covtype",
    "diabetes",
    "digits",
    "iris",
    "kddcup99",
    "lfw",
    "linnerud",
    "olivetti_faces",
    "rcv1",
    "species_distributions",
    "twenty_newsgroups",
    "wine_data",
)
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_RST_MARKUP = re.compile(r":\w+:`([^`<]*)(?:<[^>]*>)?`|``([^`]*)``|`([^`]*)`_?|\*\*|\[\d+\]_?")


def _keep(sentence: str) -> bool:
    words = sentence.split()
    return (
        6 <= len(words) <= 40
        and sentence.isascii()
        and sentence[-1] in ".!?"
        and "http" not in sentence
        and "::" not in sentence
        and not any(ch in sentence for ch in "|=_*\\{}<>")
    )


def _rst_paragraphs(text: str) -> list[str]:
    paragraphs, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        structural = (
            not stripped or line[:1].isspace() or stripped[:1] in ":-=.*|+#" or set(stripped) <= set("=-~^")
        )
        if structural:
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(stripped)
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def sklearn_sentences() -> list[str]:
    """Returns the prose sentences of scikit-learn's dataset descriptions, in file order."""
    out = []
    for name in SKLEARN_DESCR:
        text = package_file("sklearn", f"datasets/descr/{name}.rst").read_text(encoding="utf-8")
        for paragraph in _rst_paragraphs(text):
            paragraph = _RST_MARKUP.sub(
                lambda m: (
                    next(g for g in m.groups(default="") if g)
                    if m.group(0) != "**" and not m.group(0).startswith("[")
                    else ""
                ),
                paragraph,
            )
            out += [s.strip() for s in _SENTENCE_END.split(paragraph)]
    return [s for s in out if _keep(s)]


def stdlib_sentences() -> list[str]:
    """Returns the first sentence of each listed standard-library module's docstring."""
    out = []
    for name in STDLIB_MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        first = _SENTENCE_END.split(paragraph)[0].strip() if paragraph else ""
        if first and first[-1] not in ".!?":
            first += "."
        out.append(first)
    return [s for s in out if _keep(s)]


def sentence_pool(seed: int = 0) -> list[str]:
    """Returns the unique sentences of both sources in a fixed pseudo-random order."""
    unique = list(dict.fromkeys(sklearn_sentences() + stdlib_sentences()))
    order = np.random.default_rng(seed).permutation(len(unique))
    return [unique[i] for i in order]


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    return lines + [current] if current else lines


def render_page(
    sentences: Sequence[str],
    rng: np.random.Generator,
    size: tuple[int, int] = (900, 1200),
    photo: Image.Image | None = None,
    caption: str | None = None,
) -> Image.Image:
    """Renders sentences (one paragraph each) onto an RGB page, with an optional photo and caption.

    The font, font size (18-34 px), margins, background tint, blur radius (0-0.9 px) and noise (sigma 0-6)
    are drawn from rng. Text that does not fit on the page is dropped.
    """
    width, height = size
    tint = np.array([255, 255, 255]) - rng.integers(0, 30, size=3)
    page = Image.new("RGB", size, tuple(int(v) for v in tint))
    draw = ImageDraw.Draw(page)
    font_size = int(rng.integers(18, 35))
    font = ImageFont.truetype(
        str(package_file("matplotlib", f"mpl-data/fonts/ttf/{rng.choice(FONTS)}")), font_size
    )
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
    margin = int(rng.integers(30, 90))
    y = margin
    if photo is not None:
        photo_width = int(width * rng.uniform(0.35, 0.6))
        scaled = photo.resize(
            (photo_width, max(1, photo_width * photo.height // photo.width)), Image.BILINEAR
        )
        left = int(rng.integers(margin, width - margin - photo_width + 1))
        page.paste(scaled, (left, y))
        y += scaled.height + font_size // 2
        if caption:
            small = font.font_variant(size=max(14, int(font_size * 0.75)))
            for line in _wrap(draw, caption, small, width - 2 * margin):
                draw.text((margin, y), line, fill=ink, font=small)
                y += int(small.size * 1.3)
        y += font_size
    line_height = int(font_size * rng.uniform(1.25, 1.6))
    for sentence in sentences:
        for line in _wrap(draw, sentence, font, width - 2 * margin):
            if y + line_height > height - margin:
                break
            draw.text((margin, y), line, fill=ink, font=font)
            y += line_height
        y += line_height // 2
    page = page.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 0.9))))
    noisy = np.asarray(page, np.float32) + rng.normal(0.0, rng.uniform(0.0, 6.0), size=(height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
