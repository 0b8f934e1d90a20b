"""The sampled-mutation script's source rewrite keeps behaviour: decorators become the same calls after the def."""

import ast
import importlib.util
import os

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("mutation_sample",
                                              os.path.join(REPO_ROOT, "benchmarks", "mutation_sample.py"))
mutation_sample = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutation_sample)

SOURCE = '''
import torch

order = []


def tag(name):
    def wrap(f):
        def inner(*args):
            order.append(name)
            return f(*args)
        return inner
    return wrap


@torch.no_grad()
def grad_enabled():
    return torch.is_grad_enabled()


@tag("outer")
@tag("inner")
def tagged(x):
    return x + 1


class Model:
    @torch.no_grad()
    def grad_enabled(self):
        return torch.is_grad_enabled()

    @property
    def size(self):
        return 3
'''


def test_undecorated_source_has_no_decorators_but_the_same_behaviour():
    rewritten = mutation_sample.undecorate_source(SOURCE)
    decorated = [node.name for node in ast.walk(ast.parse(rewritten))
                 if isinstance(node, ast.FunctionDef) and node.decorator_list]
    assert decorated == ["size"]  # @property is kept; mutmut mutates every other function now
    namespace = {}
    exec(compile(rewritten, "rewritten", "exec"), namespace)
    assert torch.is_grad_enabled()
    assert namespace["grad_enabled"]() is False and namespace["Model"]().grad_enabled() is False
    assert namespace["tagged"](1) == 2 and namespace["order"] == ["outer", "inner"]  # applied bottom-up
    assert namespace["Model"]().size == 3


def test_config_mutates_one_package_with_its_tests():
    config = mutation_sample.mutmut_config("prior")
    assert 'only_mutate = ["dalle2_pytorch/prior/*.py"]' in config and '"tests/prior"' in config
    assert '"not slow"' in config and '"not slow"' not in mutation_sample.mutmut_config("diffusion")
