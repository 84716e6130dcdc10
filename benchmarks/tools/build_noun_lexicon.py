"""Regenerate mixreorg/data/resources/english_pos_lexicon.txt.gz, the offline part-of-speech lexicon.

The noun extractor (mixreorg/data/nouns.py) needs to know which English words can be nouns, verbs, adjectives
or adverbs, on machines with no NLTK data or spaCy models. This script takes that from the word lists of the
PyPI package ``lemminflect`` (MIT licence; its tables are derived from the NIH SPECIALIST Lexicon), installed
into a throw-away folder, and writes one ``word<TAB>tags`` line per word (tags from N, V, J, R, X = auxiliary).
No benchmark class list is read. The output is deterministic (sorted, gzip mtime 0), so re-running it on the
same package version reproduces the committed file byte for byte.

    .venv/bin/python benchmarks/tools/build_noun_lexicon.py
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

PACKAGE = "lemminflect==0.2.3"
OUTPUT = Path(__file__).resolve().parents[2] / "mixreorg" / "data" / "resources" / "english_pos_lexicon.txt.gz"
UPOS_TO_TAG = {"noun": "N", "propn": "N", "verb": "V", "adj": "J", "adv": "R", "aux": "X"}
WORD = re.compile(r"^[a-z][a-z'\-]*$")


def read_tables(package_dir: Path) -> dict[str, set[str]]:
    """Word -> tags from lemminflect's inflection table (lemma, upos, forms...) and lemma table (form, upos, lemma)."""
    resources = package_dir / "lemminflect" / "resources"
    tags: dict[str, set[str]] = defaultdict(set)

    def add(word: str, upos: str) -> None:
        word = word.strip().lower()
        tag = UPOS_TO_TAG.get(upos.strip().lower())
        if tag and WORD.match(word):
            tags[word].add(tag)

    with gzip.open(resources / "infl_lu.csv.gz", "rt", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            lemma, upos, *forms = row
            add(lemma, upos)
            for column in forms:
                for form in column.split("/"):
                    if form:
                        add(form, upos)
    with gzip.open(resources / "lemma_lu.csv.gz", "rt", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            form, upos, *_ = row
            add(form, upos)
    return tags


def write_lexicon(tags: dict[str, set[str]], out: Path) -> None:
    order = "NVJRX"
    text = io.StringIO()
    text.write(f"# English part-of-speech lexicon for mixreorg noun extraction; generated from {PACKAGE}\n")
    text.write("# (MIT licence, tables derived from the NIH SPECIALIST Lexicon)\n")
    text.write("# by benchmarks/tools/build_noun_lexicon.py\n")
    text.write("# word<TAB>tags   N noun, V verb, J adjective, R adverb, X auxiliary\n")
    for word in sorted(tags):
        text.write(f"{word}\t{''.join(t for t in order if t in tags[word])}\n")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(text.getvalue().encode("utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUTPUT, help="where to write the gzipped lexicon")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp, PACKAGE], check=True
        )
        tags = read_tables(Path(tmp))
    write_lexicon(tags, args.out)
    print(f"wrote {len(tags)} words to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
