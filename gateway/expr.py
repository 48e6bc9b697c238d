"""The expression language of computed points and alarms (DESIGN §4b).

A small, safe language: numbers, point ids, `other_device.point`, `+ - * / % **`, comparisons,
`and or not`, `abs min max sqrt round`, and `a if cond else b`. Text is parsed with Python's
`ast` module into a tree that is then checked node by node against this whitelist: anything
else (attribute access beyond `device.point`, subscripts, strings, lambdas, calls outside the
list, `__import__`) is an error with its column. The checked tree is turned into nested
closures; nothing is ever handed to Python's `eval` or `compile`.

Kinds: `number` (every integer and float point), `bool` and `string`. Arithmetic takes numbers,
`and or not` and conditions take bools, `==`/`!=` compare two values of one kind, `< <= > >=`
numbers. A bool is not a number: `1 if running else 0` says so explicitly.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

NUMBER, BOOL, STRING = "number", "bool", "string"
FUNCTIONS = ("abs", "min", "max", "sqrt", "round")
MAX_LENGTH = 2000  # characters: an expression is a formula, not a program
MAX_POWER = 1e6  # |exponent| beyond this is refused at run time (overflow, not a CPU hog)


class ExprError(Exception):
    """A refused expression: `message` says what is wrong, `column` where (1-based, or None)."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return self.message if self.column is None else f"{self.message} (column {self.column})"


class EvalError(Exception):
    """A value the expression cannot have from these inputs (division by zero, sqrt of a
    negative number, overflow): the computed point goes bad with this reason."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A name in an expression: a point of the same device (`device` None) or of another."""

    point: str
    device: str | None = None

    def __str__(self) -> str:
        return self.point if self.device is None else f"{self.device}.{self.point}"


Env = Mapping[Ref, Any]
Fn = Callable[[Env], Any]

_BINARY: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], bool]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_NOT_IN_LANGUAGE: dict[type[ast.AST], str] = {
    ast.Subscript: "indexing ([…])",
    ast.Lambda: "lambda",
    ast.JoinedStr: "an f-string",
    ast.List: "a list",
    ast.Tuple: "a tuple",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.ListComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.NamedExpr: "an assignment (:=)",
    ast.Starred: "unpacking (*)",
    ast.Await: "await",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.FloorDiv: "// (write round(a / b) or a % b)",
    ast.MatMult: "@",
    ast.Invert: "~",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Is: "is (write ==)",
    ast.IsNot: "is not (write !=)",
}


@dataclass(slots=True)
class Expression:
    """A parsed expression: its text, its tree (checked against the language) and the names it uses."""

    text: str
    tree: ast.expr
    refs: frozenset[Ref]


_DOTTED = re.compile(r"(?<![\w.-])([a-z0-9_][a-z0-9_-]*)\.(?=[A-Za-z_])")


def _devices_as_names(text: str, devices: Collection[str]) -> tuple[str, dict[str, str]]:
    """Device ids may hold `-` or start with a digit (`im-01`), which Python's grammar reads as
    a subtraction: a known device id before a dot becomes a placeholder name of the same length
    (upper case, which no device or point id uses), mapped back after parsing."""
    names: dict[str, str] = {}

    def swap(m: re.Match[str]) -> str:
        device = m.group(1)
        if device not in devices or device.isidentifier():
            return m.group(0)
        for name, dev in names.items():
            if dev == device:
                return name + "."
        name = f"D{len(names)}".ljust(len(device), "_")
        names[name] = device
        return name + "."

    return _DOTTED.sub(swap, text), names


def parse(text: str, devices: Collection[str] = ()) -> Expression:
    """Parse and check the shape of an expression (names are checked by `check`). `devices`
    are the device ids a `device.point` may name (needed only for ids that hold `-`)."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("an expression is needed")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"the expression is {len(text)} characters long; at most {MAX_LENGTH}")
    source, placeholders = _devices_as_names(text.strip(), devices)
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise ExprError(f"not an expression: {exc.msg}", exc.offset) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise ExprError(f"not an expression: {exc}") from None
    refs: set[Ref] = set()
    try:
        _shape(tree, refs, placeholders)
    except RecursionError:
        raise ExprError("the expression is nested too deeply") from None
    return Expression(text, tree, frozenset(refs))


def _col(node: ast.AST) -> int | None:
    offset = getattr(node, "col_offset", None)
    return None if offset is None else offset + 1


def _shape(node: ast.AST, refs: set[Ref], placeholders: Mapping[str, str]) -> None:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool | int | float):
            return
        what = "a string" if isinstance(value, str | bytes) else repr(value)
        raise ExprError(f"{what} is not in the language: values are numbers and point ids", _col(node))
    if isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise ExprError(f"{node.id} is a function: call it as {node.id}(…)", _col(node))
        refs.add(Ref(node.id))
        return
    if isinstance(node, ast.Attribute):
        if not isinstance(node.value, ast.Name):
            raise ExprError(
                "only device.point may have a dot: attribute access is not in the language", _col(node)
            )
        node.value.id = placeholders.get(node.value.id, node.value.id)
        refs.add(Ref(node.attr, node.value.id))
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExprError(
                f"{_NOT_IN_LANGUAGE.get(type(node.op), 'this operator')} is not in the language", _col(node)
            )
        _shape(node.left, refs, placeholders)
        _shape(node.right, refs, placeholders)
        return
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Invert):
            raise ExprError("~ is not in the language (write not)", _col(node))
        _shape(node.operand, refs, placeholders)
        return
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _shape(v, refs, placeholders)
        return
    if isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExprError(
                    f"{_NOT_IN_LANGUAGE.get(type(op), 'this comparison')} is not in the language", _col(node)
                )
        _shape(node.left, refs, placeholders)
        for c in node.comparators:
            _shape(c, refs, placeholders)
        return
    if isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _shape(part, refs, placeholders)
        return
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            if not isinstance(node.func, ast.Name):
                raise ExprError(f"only {', '.join(FUNCTIONS)} may be called", _col(node))
            raise ExprError(
                f"{node.func.id}() is not a function of the language ({', '.join(FUNCTIONS)})", _col(node)
            )
        if node.keywords:
            raise ExprError(f"{node.func.id}() takes no keyword arguments", _col(node))
        for a in node.args:
            _shape(a, refs, placeholders)
        return
    what = _NOT_IN_LANGUAGE.get(type(node), type(node).__name__)
    raise ExprError(f"{what} is not in the language", _col(node))


Kinds = Callable[[Ref], str | None]


def check(expr: Expression, kind_of: Kinds, known: Iterable[str] = ()) -> str:
    """The kind of the expression's value; ExprError for an unknown name (with a did-you-mean
    from `known`) or a type error. `kind_of(ref)` is the kind of a name, None if unknown."""
    candidates = list(known)
    for ref in sorted(expr.refs, key=str):
        if kind_of(ref) is None:
            hint = get_close_matches(str(ref), candidates, n=1)
            more = f" (did you mean {hint[0]}?)" if hint else ""
            where = (
                "" if ref.device is None else f" (device {ref.device} has no such point, or no such device)"
            )
            raise ExprError(f"unknown name {ref}{more if more else where}")
    return _kind(expr.tree, kind_of)


def _kind(node: ast.expr, kind_of: Kinds) -> str:
    if isinstance(node, ast.Constant):
        return BOOL if isinstance(node.value, bool) else NUMBER
    if isinstance(node, ast.Name | ast.Attribute):
        ref = Ref(node.id) if isinstance(node, ast.Name) else Ref(node.attr, node.value.id)  # type: ignore[attr-defined]
        kind = kind_of(ref)
        assert kind is not None
        return kind
    if isinstance(node, ast.BinOp):
        sym = _BINARY[type(node.op)][0]
        for side in (node.left, node.right):
            _need(side, NUMBER, kind_of, f"{sym} needs numbers")
        return NUMBER
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            _need(node.operand, BOOL, kind_of, "not needs a bool")
            return BOOL
        _need(node.operand, NUMBER, kind_of, "a sign needs a number")
        return NUMBER
    if isinstance(node, ast.BoolOp):
        word = "and" if isinstance(node.op, ast.And) else "or"
        for v in node.values:
            _need(v, BOOL, kind_of, f"{word} needs bools (comparisons)")
        return BOOL
    if isinstance(node, ast.Compare):
        left = _kind(node.left, kind_of)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _kind(right_node, kind_of)
            sym = _COMPARE[type(op)][0]
            if sym in ("==", "!="):
                if left != right:
                    raise ExprError(f"{sym} compares a {left} with a {right}", _col(node))
            elif left != NUMBER or right != NUMBER:
                raise ExprError(f"{sym} needs numbers, not a {left if left != NUMBER else right}", _col(node))
            left = right
        return BOOL
    if isinstance(node, ast.IfExp):
        _need(node.test, BOOL, kind_of, "the condition of … if … else … needs a bool")
        body, orelse = _kind(node.body, kind_of), _kind(node.orelse, kind_of)
        if body != orelse:
            raise ExprError(f"the two branches of … if … else … differ: a {body} and a {orelse}", _col(node))
        return body
    if isinstance(node, ast.Call):
        name = node.func.id  # type: ignore[attr-defined]
        n = len(node.args)
        if name in ("abs", "sqrt") and n != 1:
            raise ExprError(f"{name}() takes one argument, not {n}", _col(node))
        if name in ("min", "max") and n < 2:
            raise ExprError(f"{name}() takes two or more arguments", _col(node))
        if name == "round":
            if n not in (1, 2):
                raise ExprError(f"round() takes one or two arguments, not {n}", _col(node))
            if n == 2 and not (isinstance(node.args[1], ast.Constant) and type(node.args[1].value) is int):
                raise ExprError("round()'s second argument is a whole number of decimals", _col(node))
        for a in node.args:
            _need(a, NUMBER, kind_of, f"{name}() needs numbers")
        return NUMBER
    raise ExprError(f"{type(node).__name__} is not in the language", _col(node))  # pragma: no cover


def _need(node: ast.expr, kind: str, kind_of: Kinds, what: str) -> None:
    got = _kind(node, kind_of)
    if got != kind:
        shown = ast.unparse(node)
        hint = " (write 1 if … else 0)" if got == BOOL and kind == NUMBER else ""
        raise ExprError(f"{what}: {shown} is a {got}{hint}", _col(node))


def compile_expr(expr: Expression) -> Fn:
    """The expression as a function of its inputs (`env[ref]` is each name's value). It raises
    EvalError for a value it cannot have (division by zero, sqrt of a negative, overflow)."""
    return _compile(expr.tree)


def _compile(node: ast.expr) -> Fn:
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda env: value
    if isinstance(node, ast.Name | ast.Attribute):
        ref = Ref(node.id) if isinstance(node, ast.Name) else Ref(node.attr, node.value.id)  # type: ignore[attr-defined]
        return lambda env: env[ref]
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left), _compile(node.right)
        sym, op = _BINARY[type(node.op)]
        if sym == "**":
            return lambda env: _power(left(env), right(env))
        if sym in ("/", "%"):
            return lambda env: _divide(op, sym, left(env), right(env))
        return lambda env: _finite(op(left(env), right(env)), sym)
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda env: not operand(env)
        if isinstance(node.op, ast.USub):
            return lambda env: -operand(env)
        return operand
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda env: all(p(env) for p in parts)
        return lambda env: any(p(env) for p in parts)
    if isinstance(node, ast.Compare):
        first = _compile(node.left)
        chain = [
            (_COMPARE[type(op)][1], _compile(c)) for op, c in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(env: Env) -> bool:
            left = first(env)
            for op, right_fn in chain:
                right = right_fn(env)
                if not op(left, right):
                    return False
                left = right
            return True

        return compare
    if isinstance(node, ast.IfExp):
        test, body, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
        return lambda env: body(env) if test(env) else orelse(env)
    if isinstance(node, ast.Call):
        args = [_compile(a) for a in node.args]
        name = node.func.id  # type: ignore[attr-defined]
        if name == "abs":
            (a,) = args
            return lambda env: abs(a(env))
        if name == "sqrt":
            (a,) = args
            return lambda env: _sqrt(a(env))
        if name == "min":
            return lambda env: min(f(env) for f in args)
        if name == "max":
            return lambda env: max(f(env) for f in args)
        if len(args) == 1:
            (a,) = args
            return lambda env: round(_finite(a(env), "round"))
        digits = node.args[1].value  # type: ignore[attr-defined]
        a = args[0]
        return lambda env: round(a(env), digits)
    raise ExprError(f"{type(node).__name__} is not in the language")  # pragma: no cover


def _finite(value: Any, what: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError(f"{what} gave {value}")
    return value


def _divide(op: Callable[[Any, Any], Any], sym: str, a: Any, b: Any) -> Any:
    if b == 0:
        raise EvalError("division by zero" if sym == "/" else "modulo by zero")
    return _finite(op(a, b), sym)


def _power(a: Any, b: Any) -> Any:
    if abs(b) > MAX_POWER or (isinstance(a, int) and isinstance(b, int) and b > 64 and abs(a) > 1):
        a, b = float(a), float(b)
    try:
        value = a**b
    except (OverflowError, ZeroDivisionError) as exc:
        raise EvalError(f"** gave no number: {exc}") from None
    if isinstance(value, complex):
        raise EvalError(f"{a} ** {b} is not a real number")
    return _finite(value, "**")


def _sqrt(a: Any) -> float:
    if a < 0:
        raise EvalError(f"sqrt of a negative number ({a})")
    return math.sqrt(a)
