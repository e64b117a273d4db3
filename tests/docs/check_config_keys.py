#!/usr/bin/env python3
"""ctest docs.config_keys: every configuration key is documented and shown.

    check_config_keys.py SOURCE_DIR

- Every row of the core's key table (core/config.c, core_keys) is named in
  docs/OPERATIONS.md as `section.key` and set in conf/safemessenger.conf;
  a key whose default is computed on the machine it runs on (MACHINE_DEFAULTS)
  is shown commented out instead (`# key = value;`), since any value set
  there would replace that default.
- Every key set in conf/safemessenger.conf, core or plugin, is named in
  docs/OPERATIONS.md as `section.key`.
Exit status 0 when all hold, 1 otherwise (each gap is printed).
"""
import re
import sys

# (section, key) whose default depends on the machine: server.io_threads is
# the number of online CPUs, at most 8.
MACHINE_DEFAULTS = {('server', 'io_threads')}
# (section, key) that has no default and is used only with another
# setting (storage.postgresql, with storage.backend = "postgresql"; the
# cluster keys, in cluster mode only, which a node and a Redis started):
# shown commented out too, since setting it otherwise is warned about or
# starts cluster mode.
NO_DEFAULT = {('storage', 'postgresql'), ('cluster', 'node'), ('cluster', 'redis'),
              ('cluster', 'prefix')}


def core_keys(config_c):
    return re.findall(r'\{"(server|storage|cluster|plugins|limits|log|web|metrics)",\s*"([a-z_]+)",\s*parse_', config_c)


def shipped_keys(conf):
    """(section, key) for every `key = value;` inside a top-level group,
    comments dropped; nested groups (server.tls) give `tls.cert` etc.
    Also the keys shown in a comment line `# key = value;`."""
    keys, commented, stack = [], [], []
    for raw in conf.splitlines():
        m = re.match(r'^\s*#\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*("[^"]*"|[^=]*);\s*$', raw)
        if m and stack:
            commented.append(('.'.join(stack[:1]), '.'.join(stack[1:] + [m.group(1)])))
        line = re.sub(r'(#|//).*', '', raw).strip()
        if not line:
            continue
        m = re.match(r'^([A-Za-z_][A-Za-z0-9_]*)\s*[:=]\s*\{', line)
        if m:
            stack.append(m.group(1))
            if line.endswith('};') or line.endswith('}'):
                stack.pop()
            continue
        if line.startswith('}'):
            if stack:
                stack.pop()
            continue
        m = re.match(r'^([A-Za-z_][A-Za-z0-9_]*)\s*=', line)
        if m and stack:
            keys.append(('.'.join(stack[:1]), '.'.join(stack[1:] + [m.group(1)])))
    return keys, commented


def main():
    src = sys.argv[1]
    ops = open(f'{src}/docs/OPERATIONS.md').read()
    conf = open(f'{src}/conf/safemessenger.conf').read()
    config_c = open(f'{src}/core/config.c').read()
    keys, commented = shipped_keys(conf)
    shipped = set(keys)
    gaps = []
    rows = core_keys(config_c)
    if len(rows) < 20:
        gaps.append(f'core/config.c: found only {len(rows)} rows of core_keys; the parser is stale')
    for section, key in rows:
        if key == 'tls':
            continue  # a group: its keys cert and key are checked below
        if f'`{section}.{key}`' not in ops:
            gaps.append(f'docs/OPERATIONS.md does not name `{section}.{key}`')
        if (section, key) in MACHINE_DEFAULTS | NO_DEFAULT:
            if (section, key) in shipped:
                gaps.append(f'conf/safemessenger.conf sets {section}.{key}, replacing its '
                            f'machine-dependent default or used only with another setting '
                            f'(show it commented out)')
            elif (section, key) not in commented:
                gaps.append(f'conf/safemessenger.conf does not show {section}.{key} '
                            f'(as a comment: # {key} = ...;)')
        elif (section, key) not in shipped:
            gaps.append(f'conf/safemessenger.conf does not set {section}.{key}')
    for section, key in sorted(shipped):
        if f'`{section}.{key}`' not in ops:
            gaps.append(f'docs/OPERATIONS.md does not name `{section}.{key}` '
                        f'(set in conf/safemessenger.conf)')
    for g in gaps:
        print(g)
    print(f'{len(rows)} core keys, {len(shipped)} shipped keys checked; {len(gaps)} gaps')
    return 1 if gaps else 0


if __name__ == '__main__':
    sys.exit(main())
