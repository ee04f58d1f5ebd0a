#!/usr/bin/env python3
"""The layers of the source tree (docs/ARCHITECTURE.md), checked against the code.

Every source file under host/ and cuda/ lies in one layer folder; every project include
("host/..." or "cuda/...") names an existing file in a folder its own folder may use; every
library a folder's CMakeLists.txt links is the library of such a folder; and the table of what
may use what has no cycle. Prints each violation and exits 1; 0 when the tree keeps its layers.
usage: test_layers.py <source-dir>
"""
import os
import re
import sys

# Each folder, its CMake library, and the folders it may include from and link (besides
# itself). host/gpu is the only host folder that sees cuda/; cuda/ sees host/core only.
LAYERS = {
    "host/core": ("cuvae_core", []),
    "host/io": ("cuvae_io", ["host/core"]),
    "host/cpu": ("cuvae_cpu", ["host/core"]),
    "host/eval": ("cuvae_eval", ["host/core", "host/io", "host/cpu"]),
    "cuda/runtime": ("cuvae_cuda_runtime", ["host/core"]),
    "cuda/kernels": ("cuvae_cuda_kernels", ["host/core", "cuda/runtime"]),
    "cuda/libs": ("cuvae_cuda_libs", ["host/core", "cuda/runtime", "cuda/kernels"]),
    "host/gpu": ("cuvae_gpu", ["host/core", "cuda/runtime", "cuda/kernels", "cuda/libs"]),
    "host/app": ("cuvae_app", ["host/core", "host/io", "host/cpu", "host/eval", "host/gpu"]),
}
# The CMake file that defines each folder's library.
CMAKE_OF = {"cuda/runtime": "cuda/CMakeLists.txt", "cuda/kernels": "cuda/CMakeLists.txt",
            "cuda/libs": "cuda/CMakeLists.txt"}
SOURCE = re.compile(r"\.(h|cpp|cu|cuh|h\.in)$")
INCLUDE = re.compile(r'^\s*#\s*include\s+"((?:host|cuda)/[^"]+)"', re.M)


def cycle_in(table):
    """A cycle of the may-use table as a list of folders, or None."""
    state = {}

    def visit(node, path):
        state[node] = 1
        for dep in table[node][1]:
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep] if dep in path else [node, dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = 2
        return None

    for node in table:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1])
        return 2
    root = sys.argv[1]
    problems = []
    cycle = cycle_in(LAYERS)
    if cycle:
        problems.append("the layer table has a cycle: " + " -> ".join(cycle))
    for dep_list in (deps for _, deps in LAYERS.values()):
        problems += [f"the layer table names an unknown folder {d}" for d in dep_list
                     if d not in LAYERS]

    files = 0
    for top in ("host", "cuda"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                if not SOURCE.search(name):
                    continue
                files += 1
                folder = os.path.dirname(rel)
                if folder not in LAYERS:
                    problems.append(f"{rel}: not in a layer folder ({', '.join(LAYERS)})")
                    continue
                allowed = {folder, *LAYERS[folder][1]}
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    text = f.read()
                for inc in INCLUDE.findall(text):
                    target = os.path.dirname(inc)
                    generated = inc == "host/gpu/build_info.h"  # configured into the build tree
                    if not generated and not os.path.isfile(os.path.join(root, inc)):
                        problems.append(f"{rel}: includes {inc}, which does not exist")
                    elif target not in allowed:
                        problems.append(f"{rel}: includes {inc}, but {folder} may use only "
                                        f"{', '.join(sorted(allowed))}")

    lib_folder = {lib: folder for folder, (lib, _) in LAYERS.items()}
    link = re.compile(r"target_link_libraries\(\s*(\w+)([^)]*)\)", re.S)
    checked = set()
    for folder, (lib, deps) in LAYERS.items():
        cmake = CMAKE_OF.get(folder, folder + "/CMakeLists.txt")
        with open(os.path.join(root, cmake), encoding="utf-8") as f:
            text = f.read()
        for target, args in link.findall(text):
            if target != lib:
                continue
            checked.add(lib)
            for used in re.findall(r"\bcuvae_\w+", args):
                if used in lib_folder and lib_folder[used] not in deps:
                    problems.append(f"{cmake}: {lib} links {used}, but {folder} may use only "
                                    f"{', '.join(deps) or 'nothing'}")
    problems += [f"{lib}: no target_link_libraries found" for lib in lib_folder
                 if lib not in checked and lib != "cuvae_core"]

    for p in problems:
        print("FAIL:", p)
    print(f"{files} source files in {len(LAYERS)} layer folders; {len(problems)} problem(s)")
    return 1 if problems or files == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
