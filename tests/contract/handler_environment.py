"""The environment variables a handler's source reads, spelt as a literal or as a `throttling.core.names` constant."""

from __future__ import annotations

import ast

from throttling.core import names

# How a handler reads its environment: at import (`os.environ`) or in `build_dependencies(environ)`.
ENVIRONS = ("os.environ", "environ")


def variable_name(key: ast.expr) -> str | None:
    """`"X"` -> "X"; `names.ENV_X` -> the constant's value; anything else -> None."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value
    if isinstance(key, ast.Attribute) and ast.unparse(key.value) == "names" and key.attr.startswith("ENV_"):
        return getattr(names, key.attr)
    return None


def environment_variable(value: ast.expr) -> str | None:
    """`(os.)environ[K]` or `(os.)environ.get(K, ...)` -> the variable K names."""
    if isinstance(value, ast.Subscript) and ast.unparse(value.value) in ENVIRONS:
        return variable_name(value.slice)
    if isinstance(value, ast.Call) and ast.unparse(value.func) in {f"{e}.get" for e in ENVIRONS} and value.args:
        return variable_name(value.args[0])
    return None


def required_variables(source: str) -> set[str]:
    """Every variable the source reads as `environ[...]`: one missing raises KeyError when the handler builds."""
    return {name for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) in ENVIRONS
            and (name := variable_name(node.slice)) is not None}
