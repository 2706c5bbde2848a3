#!/usr/bin/env python3
"""Fails when a module of a library crate imports a module that imports it
back (directly or around a longer circle), and lists the circles.

A module is a source file (`src/a/b.rs` is `a::b`, `src/a/mod.rs` is `a`).
An import is any `crate::...` or `super::...` path in the file, outside
comments. A name re-exported by a parent (`pub use child::Name;`) counts as
an import of the child, so a module that uses `super::Name` depends on the
child that defines it, not on the parent that only re-exports it; a parent
declaring its children (`mod child;`) is not an import.

Usage: scripts/module_cycles.py CRATE_DIR...   (exit 1 on any circle)
"""
import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    """The code without comments and without the unit tests at the end
    (`#[cfg(test)] mod ...`), which are not part of the library."""
    tests = re.search(r"#\[cfg\(test\)\]\s*mod\s", text)
    if tests:
        text = text[: tests.start()]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand(prefix: list, body: str) -> list:
    """The paths of a use tree `prefix::{body}` (nested braces allowed)."""
    paths, depth, start = [], 0, 0
    for i, ch in enumerate(body + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = body[start:i].strip()
            start = i + 1
            if not item:
                continue
            m = re.match(rf"((?:{IDENT}::)*)\{{(.*)\}}$", item, flags=re.S)
            if m:
                inner = [p for p in m.group(1).split("::") if p]
                paths += expand(prefix + inner, m.group(2))
            else:
                name = item.split(" as ")[0].strip()
                paths.append(prefix + [p for p in name.split("::") if p])
    return paths


def paths_in(text: str) -> list:
    """Every `crate::`/`super::` path, braces expanded."""
    found = []
    for m in re.finditer(rf"\b((?:super::)*(?:crate|super))(?=::)((?:::{IDENT})*)(::\{{)?", text):
        head = m.group(1).split("::")
        rest = [p for p in m.group(2).split("::") if p]
        if m.group(3):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            found += expand(head + rest, text[m.end() : i - 1])
        else:
            found.append(head + rest)
    return found


def analyse(crate: Path) -> list:
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    texts = {m: strip_comments(f.read_text()) for m, f in files.items()}
    # name -> defining child, for `pub use child::...::Name;` in a module
    reexports = {}
    for m, text in texts.items():
        for use in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            tree = use.group(1).strip()
            tm = re.match(rf"((?:{IDENT}::)*)\{{(.*)\}}$", tree, flags=re.S)
            items = expand([p for p in tm.group(1).split("::") if p], tm.group(2)) if tm else [tree.split("::")]
            for path in items:
                if path and path[0] not in ("crate", "super", "self", "std") and (m + (path[0],)) in files:
                    reexports[(m, path[-1].split(" as ")[-1].strip())] = m + (path[0],)

    def resolve(m: tuple, path: list) -> tuple:
        """The module a path from module `m` leads to (`super` is the
        parent module, whichever file holds `m`)."""
        if path[0] == "crate":
            current, rest = (), path[1:]
        elif path[0] == "super":
            ups = 0
            while path and path[0] == "super":
                ups += 1
                path = path[1:]
            current, rest = m[: len(m) - ups], path
        else:  # a bare path starting at a child module of `m`
            current, rest = m, path
        for part in rest:
            if current + (part,) in files:
                current = current + (part,)
            elif (current, part) in reexports:
                return reexports[(current, part)]
            else:
                break
        return current

    edges = {m: set() for m in files}
    for m, text in texts.items():
        paths = paths_in(text)
        children = [c[-1] for c in files if len(c) == len(m) + 1 and c[: len(m)] == m]
        for child in children:
            for bare in re.finditer(rf"(?<![:\w]){child}((?:::{IDENT})+|::\{{)", text):
                paths.append([child] + [p for p in bare.group(1).split("::") if p and p != "{"])
        for path in paths:
            target = resolve(m, path)
            if target != m and target in files:
                edges[m].add(target)
    # circles: strongly connected components of more than one module
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in files:
        if v not in index:
            visit(v)
    return [sorted("::".join(c) or "lib" for c in comp) for comp in sccs], edges


def main() -> int:
    bad = 0
    for crate in sys.argv[1:]:
        circles, _ = analyse(Path(crate))
        for circle in circles:
            bad += 1
            print(f"{crate}: modules import each other in a circle: {', '.join(circle)}")
    if bad:
        return 1
    print(f"no module circles in {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
