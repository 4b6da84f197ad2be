#!/usr/bin/env python3
"""Count production lines in src/: every .rs file, minus `#[cfg(test)]` items
(modules, functions, impls) and files that are only compiled under
`#[cfg(test)]`. Prints total lines and code lines (non-blank, not a `//`
comment). Usage: scripts/prod-lines.py [-v] [src-dir] (-v: per file)"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if a != "-v"]
root = args[0] if args else "src"


def strip_cfg_test(text):
    """Drop each `#[cfg(test)]` item, from the attribute to the end of the
    item. The code is rustfmt-formatted, so an item that does not end on its
    first line (`;` or `{}`) ends at the first later line that is its
    indentation followed by `}` (braces inside strings do not matter)."""
    out, i, lines = [], 0, text.split("\n")
    test_mods = []
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("#[cfg(test)]"):
            indent = line[: len(line) - len(line.lstrip())]
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("#["):
                j += 1  # further attributes of the same item
            first = lines[j] if j < len(lines) else ""
            # `#[cfg(test)] mod name;` names a file that is test-only
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;", first)
            if m:
                test_mods.append(m.group(3))
            elif not first.rstrip().endswith((";", "{}")):
                while j < len(lines) and lines[j].rstrip() not in (indent + "}", indent + "};"):
                    j += 1
            i = j + 1
            continue
        out.append(line)
        i += 1
    return out, test_mods


files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            files[p] = open(p, encoding="utf-8").read()

test_only = set()
kept = {}
for p, text in files.items():
    lines, mods = strip_cfg_test(text)
    kept[p] = lines
    base = os.path.dirname(p)
    stem = os.path.splitext(os.path.basename(p))[0]
    for m in mods:
        for cand in (os.path.join(base, m + ".rs"), os.path.join(base, stem, m + ".rs"),
                     os.path.join(base, m, "mod.rs")):
            test_only.add(os.path.normpath(cand))
    # `#[cfg(test)] #[path = "x.rs"] mod y;`
    for m in re.finditer(r'#\[cfg\(test\)\]\s*#\[path\s*=\s*"([^"]+)"\]', text):
        test_only.add(os.path.normpath(os.path.join(base, m.group(1))))

total = code = 0
per = []
for p, lines in sorted(kept.items()):
    if os.path.normpath(p) in test_only:
        continue
    t = len([l for l in lines])
    c = len([l for l in lines if l.strip() and not l.strip().startswith("//")])
    total += t
    code += c
    per.append((c, t, p))
if "-v" in sys.argv:
    for c, t, p in sorted(per):
        print(f"{c:6} {t:6} {p}")
print(f"production lines: {total} total, {code} code (non-blank, non-comment)")
