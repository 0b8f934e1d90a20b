"""Sampled mutation testing of one package with mutmut 3 (see docs/testing-mutation.md).

A full mutmut run over the decoder, prior, trainers and data loaders takes hours on a shared 2-core machine, so
this runs a seeded random sample of each package's mutants instead:

    python benchmarks/mutation_sample.py prepare decoder /tmp/mut/decoder   # scratch copy + [tool.mutmut]
    python benchmarks/mutation_sample.py sample /tmp/mut/decoder 80 --seed 23  # generate, pick 80, write sample.txt
    cd /tmp/mut/decoder && nice -n 15 mutmut run --max-children 1 $(cat sample.txt)
    python benchmarks/mutation_sample.py score /tmp/mut/decoder                # killed / sampled, survivors

mutmut 3 leaves every decorated function (other than a lone @staticmethod / @classmethod) unmutated, and most
samplers carry ``@torch.no_grad()``.  ``prepare`` therefore rewrites the scratch copy's decorators into the
equivalent rebinding after the definition (``f = torch.no_grad()(f)``, applied bottom-up like the ``@`` syntax),
which mutmut does mutate; the repository itself is not changed.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# The tests that exercise each package; a mutant runs only those of them that reach its function.
TEST_SELECTION = {
    "diffusion": ["tests/diffusion", "tests/decoder/test_decoder_behaviour.py", "tests/prior/test_diffusion_prior.py"],
    "decoder": ["tests/decoder", "tests/diffusion/test_core_behaviour.py"],
    "prior": ["tests/prior", "tests/compat/test_legacy_priors.py"],  # the masked (legacy) attention is tested there
    "trainers": ["tests/trainers", "tests/vae/test_trainer.py"],  # the VAE trainer and its checkpoints
    "data": ["tests/data"],
}
# Decorators kept as they are: @property cannot be rebound by a plain call in a class body without changing
# the getter's name lookup, and mutmut handles lone @staticmethod / @classmethod itself.
KEPT_DECORATORS = {"property", "staticmethod", "classmethod"}


def undecorate_source(source: str) -> str:
    """Rewrite ``@d1 @d2 def f`` into ``def f`` followed by ``f = d1(d2(f))`` at the same indentation.

    Same behaviour (Python applies decorators bottom-up to the function object, then binds the name), but the
    function is no longer decorated, so mutmut mutates its body.  Functions with a kept decorator are left alone.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []  # (first decorator line, def line, end line, indent, name, decorator sources)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.decorator_list:
            continue
        names = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", None) for d in node.decorator_list}
        if names & KEPT_DECORATORS:
            continue
        decorators = [ast.get_source_segment(source, d) for d in node.decorator_list]
        if any("\n" in d for d in decorators):
            continue  # a multi-line decorator expression: leave it (none in the mutated packages today)
        first = min(d.lineno for d in node.decorator_list)
        indent = lines[node.lineno - 1][: node.col_offset]
        edits.append((first, node.lineno, node.end_lineno, indent, node.name, decorators))
    for first, def_line, end_line, indent, name, decorators in sorted(edits, reverse=True):
        applied = name
        for decorator in reversed(decorators):
            applied = f"({decorator})({applied})"
        lines.insert(end_line, f"{indent}{name} = {applied}\n")
        del lines[first - 1: def_line - 1]
    return "".join(lines)


def mutmut_config(package: str) -> str:
    """The [tool.mutmut] table for mutating ``dalle2_pytorch/<package>/`` with that package's tests."""
    tests = ", ".join(json.dumps(t) for t in TEST_SELECTION[package])
    extra = "" if package == "diffusion" else '"-m", "not slow", '  # the learning tests take minutes per mutant
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["dalle2_pytorch/"]\n'
        f'only_mutate = ["dalle2_pytorch/{package}/*.py"]\n'
        "timeout_multiplier = 5.0\n"
        f'pytest_add_cli_args = [{extra}"-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q"]\n'
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'also_copy = ["configs/", "README.md", "docs/"]\n'
        'process_isolation = "forkserver"\n'
    )


def prepare(package: str, dest: Path, rev: str = "HEAD") -> None:
    """Extract commit ``rev`` of this repository to ``dest``, undecorate the package and add the mutmut config."""
    if package not in TEST_SELECTION:
        raise SystemExit(f"unknown package {package!r}; choose one of {sorted(TEST_SELECTION)}")
    if dest.exists():
        raise SystemExit(f"{dest} exists; remove it or choose another scratch folder")
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for path in sorted((dest / "dalle2_pytorch" / package).glob("*.py")):
        path.write_text(undecorate_source(path.read_text()))
    with open(dest / "pyproject.toml", "a") as f:
        f.write(mutmut_config(package))


def _meta_files(dest: Path) -> list[Path]:
    return sorted((dest / "mutants").rglob("*.py.meta"))


def sample(dest: Path, size: int, seed: int) -> None:
    """Generate every mutant of the package in ``dest`` and write a seeded random sample to sample.txt."""
    import os

    os.chdir(dest)
    from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, set_mutant_under_test,
                                 setup_source_paths)

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    create_mutants(1)
    names = sorted(key for meta in _meta_files(dest) for key in json.loads(meta.read_text())["exit_code_by_key"])
    random.Random(seed).shuffle(names)  # a seeded permutation: the sample of n is a prefix of the sample of n + k
    chosen = sorted(names[:size])
    (dest / "sample.txt").write_text("\n".join(chosen) + "\n")
    print(f"{len(names)} mutants, sampled {len(chosen)} with seed {seed} -> {dest / 'sample.txt'}")


STATUS = {0: "survived", 1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 152: "timeout", 33: "no tests",
          34: "skipped", 36: "timeout", 37: "type check"}


def score(dest: Path) -> None:
    """Print killed / sampled for the names in sample.txt and list the other ones."""
    chosen = set((dest / "sample.txt").read_text().split())
    results = {}
    for meta in _meta_files(dest):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if key in chosen:
                results[key] = "not run" if code is None else STATUS.get(code, f"exit {code}")
    caught = sum(1 for s in results.values() if s in ("killed", "timeout"))
    print(f"{caught}/{len(chosen)} killed or timed out ({100 * caught / max(1, len(chosen)):.1f} %)")
    for key in sorted(chosen):
        if results.get(key) not in ("killed", "timeout"):
            print(f"  {results.get(key, 'missing')}: {key}")


def pending(dest: Path) -> None:
    """Print the sampled mutants that have no result yet (to pass to ``mutmut run``)."""
    chosen = set((dest / "sample.txt").read_text().split())
    done = {key for meta in _meta_files(dest) for key, code in json.loads(meta.read_text())["exit_code_by_key"].items()
            if code is not None}
    print(" ".join(sorted(chosen - done)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("package", choices=sorted(TEST_SELECTION))
    p.add_argument("dest", type=Path)
    p.add_argument("--rev", default="HEAD", help="the commit to mutate (default: HEAD)")
    s = sub.add_parser("sample")
    s.add_argument("dest", type=Path)
    s.add_argument("size", type=int)
    s.add_argument("--seed", type=int, default=23)
    for name in ("score", "pending"):
        sub.add_parser(name).add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.package, args.dest.resolve(), args.rev)
    elif args.command == "sample":
        sample(args.dest.resolve(), args.size, args.seed)
    elif args.command == "pending":
        pending(args.dest.resolve())
    else:
        score(args.dest.resolve())


if __name__ == "__main__":
    sys.exit(main())
