#!/usr/bin/python3
"""Parses a /metrics page with the Prometheus client's own parser
(Debian python3-prometheus-client), for integration.test_metrics.

    metrics_parse.py FILE

Prints one line per family, "TYPE <family> <type>", and one per sample,
"<sample name>|<label>=<value>,...|<value>" with labels sorted by name.
A page the parser refuses makes the exit status 1.
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    with open(sys.argv[1], encoding='utf-8') as f:
        text = f.read()
    try:
        for family in text_string_to_metric_families(text):
            print(f'TYPE {family.name} {family.type}')
            for s in family.samples:
                labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))
                print(f'{s.name}|{labels}|{s.value!r}')
    except ValueError as e:
        print(f'unparsable page: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
