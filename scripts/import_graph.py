#!/usr/bin/env python3
"""The import graph of src/ and its circles (issue 13: "the import graph has no circle").

Two levels are checked, each a graph of its own:
- the top-level modules (`app`, `mqtt`, `config`, …): an edge a → b when a file under a names
  `crate::b` (in a `use` line or a path);
- inside each folder, its sibling modules (`mqtt/connection.rs` → `mqtt/publisher.rs`): an edge
  when one names the other through `super::` or `crate::folder::`.
A parent's `mod.rs` re-exporting its children is not an edge between siblings. A file that
imports `super::*` gets an edge to each sibling defining a name it uses. Test modules
(`#[cfg(test)]` files named *tests*.rs, and what follows `#[cfg(test)]` in a file) are left out:
tests may reach anywhere.

    python3 scripts/import_graph.py          # prints every circle; exit 1 if there is one
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_of(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def code_of(path):
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    # Drop string literals (messages name things too), then comments (doc links name modules
    # without importing them).
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def paths_in(code):
    """Every `crate::a::b` and `super::a` path, as lists of segments."""
    found = []
    for m in re.finditer(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", code):
        found.append((m.group(1), m.group(2).split("::")[1:]))
    # `use crate::{a, b::c}` groups
    for m in re.finditer(r"\buse\s+(crate|super)::\{([^;]*)\}", code, re.S):
        for item in re.split(r",", m.group(2)):
            segs = [s for s in re.split(r"::|\{|\}", item.strip()) if s.strip()]
            if segs:
                found.append((m.group(1), [s.strip() for s in segs]))
    return found


def circles(graph):
    """Every elementary circle found by a DFS from each node (small graphs)."""
    found = set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cyc = path[:]
                    i = cyc.index(min(cyc))
                    found.add(tuple(cyc[i:] + cyc[:i]))
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return sorted(found)


def main():
    files = [
        p
        for p in SRC.rglob("*.rs")
        if not any("tests" in part for part in p.relative_to(SRC).parts) and p.name != "main.rs"
    ]
    modules = {tuple(module_of(p)) for p in files}
    top = defaultdict(set)
    siblings = defaultdict(lambda: defaultdict(set))
    for path in files:
        me = module_of(path)
        for kind, segs in paths_in(code_of(path)):
            if kind == "crate":
                target = segs
            else:
                # `super` of a::b (a/b.rs) is a; of a (a/mod.rs) the crate root.
                target = me[:-1] + segs
            # Longest existing module prefix.
            while target and tuple(target) not in modules:
                target = target[:-1]
            if not target or not me:
                continue
            if target[0] != me[0]:
                top[me[0]].add(target[0])
                continue
            # Same top-level module: an edge between siblings of the deepest common folder.
            common = 0
            while common < min(len(me), len(target)) and me[common] == target[common]:
                common += 1
            if common < len(me) and common < len(target):
                folder = "/".join(me[:common])
                siblings[folder][me[common]].add(target[common])
    # `use super::*` hides which sibling a name comes from: a file with such a glob gets an
    # edge to every sibling that defines (at its top level) a name the file uses.
    defined = defaultdict(dict)  # folder -> name -> sibling module
    item = re.compile(r"^(?:pub(?:\([^)]*\))? )?(?:fn|struct|enum|const|static|type|trait) ([A-Za-z_][A-Za-z0-9_]*)", re.M)
    codes = {}
    for path in files:
        me = module_of(path)
        if len(me) < 2:
            continue
        code = code_of(path)
        codes[tuple(me)] = code
        for name in item.findall(code):
            defined["/".join(me[:-1])][name] = me[-1]
    for me, code in codes.items():
        if not re.search(r"\buse\s+super::\*", code):
            continue
        folder = "/".join(me[:-1])
        own = set(item.findall(code))
        # Types and constants by name; functions only where called (a variable may share a
        # function's name), not as methods.
        # (An associated type named in generics, `Iterator<Item = T>`, is not a use.)
        types = re.sub(r"([<,]\s*)[A-Z]\w*\s*=(?!=)", r"\1", code)
        used = set(re.findall(r"\b([A-Z][A-Za-z0-9_]*)\b", types))
        used |= set(re.findall(r"(?<![.\w])([a-z_][a-z0-9_]*)\s*\(", code))
        for word in used - own:
            sibling = defined[folder].get(word)
            if sibling and sibling != me[-1]:
                siblings[folder][me[-1]].add(sibling)
    bad = 0
    for cyc in circles(top):
        print("circle (top-level):", " → ".join(cyc + (cyc[0],)))
        bad += 1
    for folder, graph in sorted(siblings.items()):
        for cyc in circles(graph):
            print(f"circle (in {folder}/):", " → ".join(cyc + (cyc[0],)))
            bad += 1
    if bad:
        sys.exit(1)
    print("no circle")


if __name__ == "__main__":
    main()
