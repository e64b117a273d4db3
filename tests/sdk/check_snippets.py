#!/usr/bin/env python3
"""ctest sdk.doc_snippets: the plugin guide's code cannot rot.

    check_snippets.py SOURCE_DIR [DOC]

Every ```c block of DOC (default SOURCE_DIR/docs/PLUGINS.md) must appear
verbatim, as whole lines, in one of the sources the build compiles
(SOURCES below). A block indented under a list item is compared without
the indentation of its opening fence. Exit status 0 when all blocks are
found, 1 otherwise (each missing block is named by its line in DOC).
"""
import glob
import os
import sys

# Compiled by the test suite: the example through sdk.example_out_of_tree,
# the test plugins and headers by the normal build.
SOURCES = [
    "examples/plugins/hello/*.c",
    "tests/plugins/guide_example.c",
    "tests/plugins/feature_probe.c",
    "tests/plugins/events_ex.c",
    "include/safemessenger/*.h",
]


def c_blocks(lines):
    """Yields (line number of the opening fence, block text)."""
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped == "```c":
            indent = len(lines[i]) - len(lines[i].lstrip())
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            if j == len(lines):
                raise ValueError(f"line {i + 1}: ```c block is never closed")
            body = []
            for line in lines[start:j]:
                if line[:indent].strip():
                    raise ValueError(f"line {i + 1}: block line less indented than its fence")
                body.append(line[indent:])
            yield i + 1, "\n".join(body)
            i = j
        i += 1


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[1]
    doc = argv[2] if len(argv) == 3 else os.path.join(root, "docs", "PLUGINS.md")
    sources = {}
    for pattern in SOURCES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            with open(path, encoding="utf-8") as f:
                # Framed by newlines so a block matches whole lines only.
                sources[os.path.relpath(path, root)] = "\n" + f.read() + "\n"
    if not sources:
        print(f"check_snippets: no source files under {root}", file=sys.stderr)
        return 1
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    try:
        blocks = list(c_blocks(lines))
    except ValueError as e:
        print(f"check_snippets: {doc}: {e}", file=sys.stderr)
        return 1
    if not blocks:
        print(f"check_snippets: {doc} has no ```c block at all", file=sys.stderr)
        return 1
    missing = 0
    for line_no, text in blocks:
        if not text.strip():
            print(f"{doc}:{line_no}: empty ```c block", file=sys.stderr)
            missing += 1
            continue
        where = [name for name, body in sources.items() if "\n" + text + "\n" in body]
        if not where:
            first = text.strip().split("\n")[0]
            print(f"{doc}:{line_no}: ```c block not found verbatim in any of "
                  f"{', '.join(SOURCES)}: starts with: {first}", file=sys.stderr)
            missing += 1
    print(f"check_snippets: {len(blocks) - missing} of {len(blocks)} ```c blocks found "
          f"in the compiled sources")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
