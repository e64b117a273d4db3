#!/usr/bin/env python3
"""ctest docs.metrics: every metric on /metrics is documented, and only those.

    check_metrics.py SOURCE_DIR

- Every family the core declares (core/server_metrics.c: the name strings
  of its family() and metrics_family() calls) and every one a shipped
  plugin registers (plugins/*/*.c: metric_register's name string) has a
  row in docs/OPERATIONS.md's "Monitoring" table (| `name` | type | ...).
- Every row of that table names one of them.
Exit status 0 when both hold, 1 otherwise (each gap is printed).
"""
import glob
import re
import sys

NAME = r'"((?:safemessenger|process)_[a-z0-9_]+)"'


def code_names(src):
    names = set(re.findall(NAME, open(f'{src}/core/server_metrics.c').read()))
    for path in glob.glob(f'{src}/plugins/*/*.c'):
        text = open(path).read()
        names |= set(re.findall(r'metric_register\([^;]*?' + NAME, text, re.S))
    return names


def documented_names(src):
    ops = open(f'{src}/docs/OPERATIONS.md').read()
    m = re.search(r'^## Monitoring\n(.*?)^## ', ops, re.S | re.M)
    if not m:
        return None
    return set(re.findall(r'^\| `([a-z0-9_]+)` \|', m.group(1), re.M))


def main():
    src = sys.argv[1]
    code = code_names(src)
    docs = documented_names(src)
    if docs is None:
        print('docs/OPERATIONS.md has no "## Monitoring" section')
        return 1
    gaps = [f'{n}: on /metrics, not in the Monitoring table of docs/OPERATIONS.md'
            for n in sorted(code - docs)]
    gaps += [f'{n}: in the Monitoring table of docs/OPERATIONS.md, declared nowhere'
             for n in sorted(docs - code)]
    for g in gaps:
        print(g)
    if not code:
        print('no metric names found in core/server_metrics.c: the pattern is out of date')
        return 1
    return 1 if gaps else 0


if __name__ == '__main__':
    sys.exit(main())
