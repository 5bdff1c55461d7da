#!/usr/bin/env python3
"""Layout check for pgstash's Rust sources (run by .ci/run).

Fails when a file in proxy/src or rules/src is over MAX_LINES lines, or when
modules import each other in a circle. A module is a file; an import is any
`crate::…` or `super::…` path in it (a `use` or a path in code), resolved to
the deepest module file it names. A parent declaring or re-exporting its
children (`mod x; pub use x::Y;`) is not an import: a path through such a
re-export counts as an import of the module that defines the item.
"""

import os
import re
import sys

MAX_LINES = 500
ROOTS = ["proxy/src", "rules/src"]
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def modules(root):
    """Module path (tuple) -> file, for every .rs file under root."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found.setdefault(tuple(parts), os.path.join(dirpath, f))
    return found


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def test_module_start(text):
    """Offset of a trailing `#[cfg(test)] mod tests {…}`: imports there are the tests'."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return m.start() if m else len(text)


REEXPORT = re.compile(r"\bpub\s+use\s+([a-z_][a-z0-9_]*)::(\{[^;]*\}|[A-Za-z_][A-Za-z0-9_]*)\s*;", re.S)


def reexports(mods):
    """(module, item) -> module defining it, for `pub use child::Item` in a parent."""
    alias = {}
    for mod, file in mods.items():
        text = strip_comments(open(file, encoding="utf-8").read())
        for m in REEXPORT.finditer(text):
            child = mod + (m.group(1),)
            if child not in mods:
                continue
            for item in re.split(r"[{},\s]+", m.group(2)):
                if item and item != "self":
                    alias[(mod, item.split(" as ")[0])] = child
    return alias


def resolve(mods, here, kind, segments, is_dir_module, alias=None):
    if kind == "crate":
        base = ()
    else:
        base = here if is_dir_module else here[:-1]
        while segments and segments[0] == "super":
            base = base[:-1]
            segments = segments[1:]
    full = base + tuple(segments)
    path = full
    # The deepest module file the path names.
    while path and path not in mods:
        path = path[:-1]
    # Through re-exports, to the module that defines the item.
    while alias is not None and len(full) > len(path):
        defined = alias.get((path, full[len(path)]))
        if defined is None:
            break
        path = defined
    return path


def graph(root):
    mods = modules(root)
    alias = reexports(mods)
    edges = {m: set() for m in mods}
    for mod, file in mods.items():
        text = open(file, encoding="utf-8").read()
        text = strip_comments(text[: test_module_start(text)])
        is_dir = os.path.basename(file) in ("mod.rs", "lib.rs", "main.rs")
        refs = []
        for m in USE_GROUP.finditer(text):
            prefix = [s for s in m.group(2).split("::") if s]
            for item in re.split(r"[,\s]+", m.group(3)):
                item = item.strip().split("::")
                if item and item[0] and item[0] != "self":
                    refs.append((m.group(1), prefix + item))
        for m in PATH.finditer(text):
            refs.append((m.group(1), [s for s in m.group(2).split("::") if s]))
        # Paths into a child the file declares (`mod relay;` … `relay::Relay`),
        # re-exports aside.
        children = set(re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M))
        bare = REEXPORT.sub("", text)
        for child in children:
            if re.search(r"(?<![:\w])" + child + r"::", bare):
                base = mod if is_dir else mod[:-1] + (mod[-1],)
                if base + (child,) in mods:
                    edges[mod].add(base + (child,))
        for kind, segments in refs:
            target = resolve(mods, mod, kind, segments, is_dir, alias)
            if target != mod and target:
                edges[mod].add(target)
        edges[mod].discard(())
    return mods, edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    failed = False
    for root in ROOTS:
        root = os.path.join(repo, root)
        mods, edges = graph(root)
        for mod, file in sorted(mods.items()):
            n = sum(1 for _ in open(file, encoding="utf-8"))
            if n > MAX_LINES:
                print(f"{os.path.relpath(file, repo)}: {n} lines (at most {MAX_LINES})")
                failed = True
        for comp in cycles(edges):
            names = " <-> ".join("::".join(m) or "crate" for m in comp)
            print(f"{os.path.relpath(root, repo)}: import circle: {names}")
            failed = True
    if failed:
        sys.exit(1)
    print("layout: ok")


if __name__ == "__main__":
    main()
