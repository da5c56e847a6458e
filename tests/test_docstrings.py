"""The public API's docstrings: complete, in numpydoc form, and on the API page.

Every public class, function and method reachable from the ``__all__`` of the
public modules is checked with numpydoc's validator (as scikit-learn's own
``sklearn/tests/test_docstrings.py`` does), every module attribute named in an
``__all__`` has a docstring, and every public name is rendered by a ``:::``
directive of ``docs/api.md``. mkdocstrings drops an object without a docstring
from the page silently, so a missing docstring is a missing API entry.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType

import pytest
from numpydoc import validate  # in the `test` extra: the check runs, never skips
from numpydoc.docscrape import NumpyDocString

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.md"

PUBLIC_MODULES = [
    "sk_o2o",
    "sk_o2o.rl",
    "sk_o2o.data",
    "sk_o2o.datasets",
    "sk_o2o.datasets.builder",
    "sk_o2o.metrics",
    "sk_o2o.unlearning",
    "sk_o2o.unlearning.metrics",
    "sk_o2o.unlearning.famr",
    "sk_o2o.unlearning.baselines",
    "sk_o2o.rl.balance",
    "sk_o2o.rl.online",
    "sk_o2o.rl.algos.iql",
    "sk_o2o.rl.algos.td3bc",
    "sk_o2o.rl.algos.famo2o",
]
# Rendered on the API page ("Base classes") without being in a public __all__.
BASE_CLASSES = ["sk_o2o._base.TorchEstimator", "sk_o2o.rl.base.BaseRLPolicy"]

# numpydoc checks that are not enforced, and why; every other check is. As in
# scikit-learn's test_docstrings.py, which ignores RT02, GL01 and GL02 everywhere
# and ES01, SA01 and EX01 for methods.
IGNORED_CHECKS = {
    # Sections that are not wanted everywhere.
    "ES01": "no extended summary: a one-line summary is enough for a small "
    "function, or for a method its class explains",
    "EX01": "no Examples: the estimators, converters and user-facing functions "
    "have them (run as doctests); a loss or an update step states its formula",
    "SA01": "no See Also: given where another object is worth pointing to",
    # Style rules the project does not follow.
    "RT02": "the Returns line names the value (`self : object`), as in "
    "scikit-learn, instead of giving the type alone",
    "SS02": "a summary may start with a formula or a code literal (π_b(β | s), "
    "``value``), which has no capital letter",
    "SS05": "a summary may be a noun phrase (`Mean episode return of ...`) "
    "rather than an imperative verb",
    "PR08": "a parameter description may start with a code literal or a symbol",
    "PR09": "a parameter description may end with a code literal or a formula",
    "RT04": "a return description may start with a code literal or a symbol",
    "RT05": "a return description may end with a code literal or a formula",
    "SA03": "a See Also description may start with a code literal",
}


def _public_objects() -> dict[str, object]:
    """Each object named in a public ``__all__``, under its first public path."""
    objects: dict[str, object] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            objects.setdefault(f"{module_name}.{name}", getattr(module, name))
    return objects


def _canonical(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _import(path: str):
    """The object at a dotted path: a module, then attributes (a class's method)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def _members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties of ``cls`` defined in sk_o2o, inherited too.

    Methods of scikit-learn, torch or object (``get_params``, ``forward`` of a
    module that does not override it) are theirs to document.
    """
    members = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or not owner.__module__.startswith("sk_o2o"):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, (classmethod, staticmethod)):
            raw = raw.__func__
        if inspect.isfunction(raw) or isinstance(raw, property):
            members.append((name, raw))
    return members


def _documented_objects() -> tuple[list[str], list[str]]:
    """Import paths of the functions, classes and methods, and of the properties.

    Each object once, under the path where it is defined (an inherited method is
    checked where it is written).
    """
    callables: dict[str, None] = {}
    properties: dict[str, None] = {}
    classes = [_import(path) for path in BASE_CLASSES]
    for obj in _public_objects().values():
        if inspect.isclass(obj):
            classes.append(obj)
        elif inspect.isfunction(obj):
            callables[_canonical(obj)] = None
    for cls in classes:
        callables[_canonical(cls)] = None
        for name, member in _members(cls):
            if isinstance(member, property):
                properties[f"{_canonical(cls)}.{name}"] = None
            else:
                callables[_canonical(member)] = None
    return sorted(callables), sorted(properties)


CALLABLES, PROPERTIES = _documented_objects()


def test_the_lists_find_the_api():
    assert len(CALLABLES) > 100  # the walk still finds the classes' methods
    for path in (
        "sk_o2o.rl.estimators.IQLPolicy",
        "sk_o2o.rl.base.BaseRLPolicy.fit",
        "sk_o2o._base.TorchEstimator.save",
        "sk_o2o.metrics._OfflineScorer.score",
        "sk_o2o.rl.algos.iql.IQLCore.update",
        "sk_o2o.unlearning.famr.famr_unlearn",
    ):
        assert path in CALLABLES
    assert "sk_o2o.data.buffer.TransitionBuffer.capacity" in PROPERTIES


@pytest.mark.parametrize("path", CALLABLES)
def test_numpydoc(path):
    result = validate.validate(path)
    ignored = set(IGNORED_CHECKS)
    obj = _import(path)
    if inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
        # A NamedTuple documents its fields as Attributes: griffe does not see
        # them as parameters of the generated __new__ (and warns on a
        # Parameters section), numpydoc wants them as parameters.
        doc = NumpyDocString(inspect.getdoc(obj))
        documented = [n.strip() for a in doc["Attributes"] for n in a.name.split(",")]
        assert documented == list(obj._fields), f"{path}: document every field"
        ignored |= {"PR01"}
    errors = [
        f"{code}: {message}"
        for code, message in result["errors"]
        if code not in ignored
    ]
    assert not errors, (
        f"{path} ({result['file']}:{result['file_line']}):\n" + "\n".join(errors)
    )


@pytest.mark.parametrize("path", PROPERTIES)
def test_property_docstring(path):
    cls_path, _, name = path.rpartition(".")
    assert inspect.getdoc(vars(_import(cls_path))[name]), f"{path} has no docstring"


# ------------------------------------------------------------------ module attributes
def _attribute_docstring(module: ModuleType, name: str) -> str | None:
    """The string literal after ``name``'s assignment in ``module`` (griffe's
    attribute docstring), following ``from ... import name`` to its source."""
    tree = ast.parse(inspect.getsource(module))
    for statement, following in zip(tree.body, [*tree.body[1:], None], strict=True):
        if isinstance(statement, ast.ImportFrom) and name in (
            alias.asname or alias.name for alias in statement.names
        ):
            return _attribute_docstring(importlib.import_module(statement.module), name)
        targets = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                return following.value.value
            return None
    return None


ATTRIBUTES = [
    path
    for path, obj in _public_objects().items()
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))
]


def test_attributes_are_found():
    assert "sk_o2o.metrics.td_error_scorer" in ATTRIBUTES
    assert "sk_o2o.data.D4RL_KEYS" in ATTRIBUTES


@pytest.mark.parametrize("path", ATTRIBUTES)
def test_attribute_docstring(path):
    module_name, _, name = path.rpartition(".")
    docstring = _attribute_docstring(importlib.import_module(module_name), name)
    assert docstring, (
        f"{path} has no docstring (a string literal on the line after its "
        "assignment), so the API reference leaves it out."
    )


# ------------------------------------------------------------------ the API page
def _directives() -> dict[str, list[str] | None]:
    """The API page's ``::: path`` directives and each one's ``members`` option.

    ``None``: no ``members`` option (every public member with a docstring is
    rendered, a module's imported ones when they are in its ``__all__``).
    """
    directives: dict[str, list[str] | None] = {}
    lines = API_PAGE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        match = re.match(r":::\s+(\S+)\s*$", line)
        if not match:
            continue
        options = []
        for option in lines[i + 1 :]:
            if option.strip() and not option.startswith(" "):
                break
            options.append(option)
        members = None
        block = "\n".join(options)
        inline = re.search(r"^\s*members:\s*(.*)$", block, re.M)
        if inline:
            value = inline.group(1).strip()
            if value in ("false", "[]"):
                members = []
            elif value.startswith("["):
                members = [m.strip(" \"'") for m in value.strip("[]").split(",")]
            else:  # a YAML list, one "- name" per line
                after = block[inline.end() :]
                members = re.findall(r"^\s*-\s*(\w+)\s*$", after, re.M)
        directives[match.group(1)] = members
    return directives


def test_directives_are_read():
    directives = _directives()
    assert directives["sk_o2o.IQLPolicy"] is None
    assert "sk_o2o.unlearning.famr" in directives


@pytest.mark.parametrize("path", list(_public_objects()))
def test_public_name_is_on_the_api_page(path):
    """Rendered by a directive for it, or by one for a module that lists it.

    The same object may be public under several paths (``sk_o2o.IQLPolicy``,
    ``sk_o2o.rl.IQLPolicy``): one of them on the page is enough.
    """
    directives = _directives()
    obj = _public_objects()[path]
    paths = [p for p, o in _public_objects().items() if o is obj]
    for public_path in paths:
        module_name, _, name = public_path.rpartition(".")
        if public_path in directives:
            return
        if module_name in directives:
            members = directives[module_name]
            if members is None or name in members:
                return
    pytest.fail(
        f"{path} is not rendered by docs/api.md: add `::: {path}`, or a `:::` "
        "directive for its module."
    )
