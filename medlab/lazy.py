"""Modules imported on first use, so that `--help` and one-line input errors answer without
starting TensorFlow (several seconds), while every import still sits at the top of its file."""

import importlib
import importlib.util
import sys


def lazy_import(name):
    """`name` as a module object whose code runs when one of its attributes is first read.

    Already imported modules are returned as they are. Uses the standard library's `LazyLoader`.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
