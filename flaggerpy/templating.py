"""Metric queries as Flagger writes them: a small, strict subset of Go's ``text/template``.

Flagger renders every MetricTemplate query, and the builtin PromQL of every mesh, with Go's
``text/template`` and the :class:`~flaggerpy.analysis.MetricTemplateModel` exposed as
**functions without arguments** (spec §4.1)::

    sum(rate(requests_total{namespace="{{ namespace }}",pod=~"{{ target }}-.*"}[{{ interval }}]))

Queries written for Flagger must render the same here, so this is a port of the part of the
template language that queries actually use, not a general template engine:

- text, and actions ``{{ ... }}`` with Go's whitespace trimming (``{{- `` drops the whitespace
  before the action, `` -}}`` the whitespace after it) and comments ``{{/* ... */}}``;
- the model's functions ``name``, ``namespace``, ``target``, ``service``, ``ingress``,
  ``route``, ``interval`` and ``variables``; ``{{ variables.key }}`` (a field of the map that
  ``variables`` returns) and ``{{ index variables "key" }}``;
- variables: ``{{- $route := printf "kube_%s__%s" namespace ingress }}`` then ``{{ $route }}``
  (Skipper's builtin query does exactly this), and ``$x = ...`` to reassign;
- Go's ``printf``, ``print``, ``index`` and ``len``; string (``"..."``, raw ```...```), number
  and boolean literals; pipelines ``a | b`` and parenthesised sub-pipelines.

Anything else (``if``, ``range``, ``define``, other functions) is a :class:`TemplatingError`,
raised before anything is queried, never a silently wrong query. Errors say what and where:
``line 1, column 38: function "targt" not defined (in {{ targt }})``.

Where Go would print something rather than fail, we fail instead, because a query with a hole
in it matches the wrong series without any error (docs/compatibility.md):

- a missing key is an error both for ``{{ variables.key }}`` (Flagger's ``missingkey=error``)
  and for ``{{ index variables "key" }}`` (Go's ``index`` returns an empty string);
- ``printf`` with too few or too many arguments is an error (Go prints ``%!s(MISSING)``).

A query comes from a MetricTemplate anyone with write access to one may create, and it is
rendered inside the controller, so rendering is bounded where Go's is not: parentheses nest
at most :data:`MAX_EXPRESSION_DEPTH` deep (Go's parser stops at 10000; Python's stack would
not), a ``printf`` width or precision above 1000000 is an error (Go prints ``%!(BADWIDTH)``),
and no template, value or rendered query may exceed :data:`MAX_RENDERED` characters (doubling a
variable forty times would otherwise ask for a terabyte). Each is a :class:`TemplatingError`.

Rendering is pure; parsed templates are cached, since the same few queries are rendered on
every analysis tick.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from flaggerpy.analysis import MetricTemplateModel, format_go_float
from flaggerpy.errors import FlaggerError

__all__ = ["MAX_EXPRESSION_DEPTH", "MAX_RENDERED", "MODEL_FUNCTIONS", "TemplatingError",
           "model_functions", "parse", "render"]

MODEL_FUNCTIONS: Final = (
    "name", "namespace", "target", "service", "ingress", "route", "interval", "variables",
)
"""The functions a query may call to read the model (Flagger's ``TemplateFunctions``)."""

MAX_EXPRESSION_DEPTH: Final = 100
"""How deep parenthesised pipelines may nest; no real query comes near it."""

MAX_RENDERED: Final = 1 << 20
"""The most characters a value or a whole rendered query may have (1 MiB): far beyond any
query a metrics backend accepts, far below what would hurt the controller."""

_MAX_WIDTH: Final = 1_000_000  # Go's fmt treats a larger width or precision as bad

_SPACE: Final = " \t\r\n"
_KEYWORDS: Final = frozenset({
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
})
_MISSING: Final = object()  # "no value piped in", distinct from a piped None


class TemplatingError(FlaggerError):
    """A query template could not be parsed or rendered; the message says what and where."""


# --- syntax tree ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Func:
    name: str


@dataclass(frozen=True, slots=True)
class _Var:
    name: str  # with its "$"


@dataclass(frozen=True, slots=True)
class _Dot:
    """``.`` or ``.A.B``: the template's data, which Flagger never passes (it is nil)."""

    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Literal:
    value: object


@dataclass(frozen=True, slots=True)
class _Chain:
    """Field access on an operand's value: ``variables.reporter``, ``$x.key``, ``(p).key``."""

    operand: _Operand
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Command:
    operands: tuple[_Operand, ...]


@dataclass(frozen=True, slots=True)
class _Pipeline:
    commands: tuple[_Command, ...]
    declare: str | None = None  # "$x" in "$x := ..."
    assign: str | None = None  # "$x" in "$x = ..."


_Operand: TypeAlias = "_Func | _Var | _Dot | _Literal | _Chain | _Pipeline"


@dataclass(frozen=True, slots=True)
class _Action:
    pipeline: _Pipeline
    source: str
    line: int
    column: int


_Node: TypeAlias = "_Text | _Action"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed query template; render it with :func:`render` or :meth:`execute`."""

    source: str
    nodes: tuple[_Node, ...] = field(repr=False)

    def execute(self, functions: Mapping[str, Callable[..., Any]]) -> str:
        """Renders with these model functions (usually :func:`model_functions`)."""
        scope: dict[str, object] = {}
        out: list[str] = []
        size = 0
        for node in self.nodes:
            if isinstance(node, _Text):
                out.append(node.text)
                size += len(node.text)
                continue
            try:
                value = _eval_pipeline(node.pipeline, functions, scope, final=_MISSING)
            except _EvalError as exc:
                raise TemplatingError(
                    f"line {node.line}, column {node.column}: {exc} (in {node.source})"
                ) from None
            if node.pipeline.declare is None and node.pipeline.assign is None:
                text = _format(value)
                out.append(text)
                size += len(text)
            if size > MAX_RENDERED:
                raise TemplatingError(
                    f"line {node.line}, column {node.column}: rendered query longer than "
                    f"{MAX_RENDERED} characters (in {node.source})")
        return "".join(out)


# --- public functions -------------------------------------------------------------------------


def render(template: str, model: MetricTemplateModel) -> str:
    """Renders a query template with the model's values, as Flagger's ``RenderQuery`` does.

    Raises :class:`TemplatingError` naming the unknown function, missing key or syntax error.
    """
    return parse(template).execute(model_functions(model))


def model_functions(model: MetricTemplateModel) -> dict[str, Callable[..., Any]]:
    """The model as niladic functions: ``{{ name }}``, ..., ``{{ variables }}``."""
    return {
        "name": lambda: model.name,
        "namespace": lambda: model.namespace,
        "target": lambda: model.target,
        "service": lambda: model.service,
        "ingress": lambda: model.ingress,
        "route": lambda: model.route,
        "interval": lambda: model.interval,
        "variables": lambda: model.variables,
    }


@functools.lru_cache(maxsize=512)
def parse(template: str) -> Template:
    """Parses a template once; raises :class:`TemplatingError` for a syntax error."""
    return _Parser(template).parse()


# --- parser -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, field, var, string, number, bool, nil, dot, lparen, rparen, pipe, declare,
    #            assign, keyword
    text: str
    value: object = None
    spaced: bool = False  # whitespace before it: "a .b" is two operands, "a.b" one


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIELD = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$[A-Za-z0-9_]*")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_PUNCTUATION: Final = {"(": "lparen", ")": "rparen", "|": "pipe", "=": "assign"}
_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?)")


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self._depth = 0  # parentheses open around the operand being parsed

    def parse(self) -> Template:
        src = self.source
        if len(src) > MAX_RENDERED:
            raise self._error(1, 1, f"query template longer than {MAX_RENDERED} characters")
        nodes: list[_Node] = []
        pos = 0
        trim_next = False
        while True:
            start = src.find("{{", pos)
            text = src[pos:] if start < 0 else src[pos:start]
            if trim_next:
                text = text.lstrip(_SPACE)
            if start < 0:
                if text:
                    nodes.append(_Text(text))
                return Template(src, tuple(nodes))
            i = start + 2
            if src.startswith("-", i) and i + 1 < len(src) and src[i + 1] in _SPACE:
                text = text.rstrip(_SPACE)
                i += 2
            if text:
                nodes.append(_Text(text))
            line, column = self._where(start)
            if src.startswith("/*", i):
                pos, trim_next = self._comment(i, line, column)
                continue
            tokens, pos, trim_next = self._lex_action(i, line, column)
            action_source = _shorten(src[start:pos])
            pipeline = self._parse_pipeline(tokens, line, column, action_source)
            nodes.append(_Action(pipeline, action_source, line, column))

    def _where(self, offset: int) -> tuple[int, int]:
        line = self.source.count("\n", 0, offset) + 1
        column = offset - (self.source.rfind("\n", 0, offset) + 1) + 1
        return line, column

    def _error(self, line: int, column: int, message: str) -> TemplatingError:
        return TemplatingError(f"line {line}, column {column}: {message}")

    def _comment(self, i: int, line: int, column: int) -> tuple[int, bool]:
        end = self.source.find("*/", i + 2)
        if end < 0:
            raise self._error(line, column, "unclosed comment")
        after = end + 2
        if self.source.startswith("}}", after):
            return after + 2, False
        if self.source.startswith(" -}}", after) or (
                after < len(self.source) and self.source[after] in _SPACE
                and self.source.startswith("-}}", after + 1)):
            return after + 4, True
        raise self._error(line, column, "comment ends before closing delimiter")

    def _lex_action(self, i: int, line: int, column: int) -> tuple[list[_Token], int, bool]:
        """Tokens of one action from ``i`` (just past ``{{`` or ``{{- ``) to its ``}}``."""
        src = self.source
        tokens: list[_Token] = []
        spaced = True
        while True:
            if i >= len(src):
                raise self._error(line, column, "unclosed action")
            if src[i] in _SPACE:
                if src.startswith("-}}", i + 1):
                    return tokens, i + 4, True
                i += 1
                spaced = True
                continue
            if src.startswith("}}", i):
                return tokens, i + 2, False
            token, i = self._token(i, line, column)
            tokens.append(_Token(token.kind, token.text, token.value, spaced=spaced))
            spaced = False

    def _token(self, i: int, line: int, column: int) -> tuple[_Token, int]:
        """The token starting at ``i`` and where it ends."""
        src = self.source
        c = src[i]
        if c == '"':
            value, end = self._quoted(i, line, column)
            return _Token("string", value, value), end
        if c == "`":
            end = src.find("`", i + 1)
            if end < 0:
                raise self._error(line, column, "unterminated raw quoted string")
            return _Token("string", src[i + 1:end], src[i + 1:end]), end + 1
        if c in _PUNCTUATION:
            return _Token(_PUNCTUATION[c], c), i + 1
        if src.startswith(":=", i):
            return _Token("declare", ":="), i + 2
        if c == "$":
            match = _VAR.match(src, i)
            assert match is not None  # "$" alone matches
            return _Token("var", match.group()), match.end()
        if c == ".":
            match = _FIELD.match(src, i)
            if match is not None:
                return _Token("field", match.group()[1:]), match.end()
            number = _NUMBER.match(src, i)
            if number is not None and number.end() > i + 1:
                return self._number(number.group(), line, column), number.end()
            return _Token("dot", "."), i + 1
        if c.isdigit() or (c in "+-" and src[i + 1:i + 2].isdigit()):
            number = _NUMBER.match(src, i)
            if number is None:
                raise self._error(line, column, f"bad number syntax: {src[i:i + 10]!r}")
            return self._number(number.group(), line, column), number.end()
        match = _IDENT.match(src, i)
        if match is None:
            raise self._error(line, column, f'unexpected "{c}" in action')
        word = match.group()
        if word in ("true", "false"):
            return _Token("bool", word, word == "true"), match.end()
        if word == "nil":
            return _Token("nil", word, None), match.end()
        return _Token("keyword" if word in _KEYWORDS else "ident", word), match.end()

    def _number(self, text: str, line: int, column: int) -> _Token:
        clean = text.replace("_", "")
        try:
            value: object = int(clean, 0)
        except ValueError:
            try:
                value = float(clean)
            except ValueError:
                raise self._error(line, column, f'bad number syntax: "{text}"') from None
        return _Token("number", text, value)

    def _quoted(self, i: int, line: int, column: int) -> tuple[str, int]:
        """A Go interpreted string literal starting at ``i``; returns its value and the end."""
        src = self.source
        out: list[str] = []
        j = i + 1
        simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                  "\\": "\\", '"': '"', "'": "'"}
        while j < len(src):
            c = src[j]
            if c == '"':
                return "".join(out), j + 1
            if c == "\n":
                break
            if c != "\\":
                out.append(c)
                j += 1
                continue
            esc = src[j + 1:j + 2]
            if esc in simple:
                out.append(simple[esc])
                j += 2
                continue
            widths = {"x": 2, "u": 4, "U": 8}
            if esc in widths:
                digits = src[j + 2:j + 2 + widths[esc]]
                if len(digits) == widths[esc] and all(d in _HEX for d in digits):
                    out.append(chr(int(digits, 16)))
                    j += 2 + widths[esc]
                    continue
            elif esc and esc in "01234567":
                digits = src[j + 1:j + 4]
                if len(digits) == 3 and all(d in "01234567" for d in digits):
                    out.append(chr(int(digits, 8)))
                    j += 4
                    continue
            raise self._error(line, column, f"invalid escape in string: \\{esc}")
        raise self._error(line, column, "unterminated quoted string")

    # -- pipelines ------------------------------------------------------------------------------

    def _parse_pipeline(
            self, tokens: list[_Token], line: int, column: int, source: str
    ) -> _Pipeline:
        if not tokens:
            raise self._error(line, column, f"missing value for command (in {source})")
        keyword = next((t for t in tokens if t.kind == "keyword"), None)
        if keyword is not None:
            raise self._error(
                line, column,
                f"{{{{ {keyword.text} }}}} is not supported in metric queries (in {source})",
            )
        stream = _TokenStream(tokens)
        pipeline = self._pipeline(stream, line, column, source, top=True)
        if not stream.done():
            raise self._error(line, column, f'unexpected "{stream.peek().text}" (in {source})')
        return pipeline

    def _pipeline(
            self, stream: _TokenStream, line: int, column: int, source: str, *, top: bool
    ) -> _Pipeline:
        declare = assign = None
        if top and stream.peek_kind(0) == "var" and stream.peek_kind(1) in ("declare", "assign"):
            name = stream.next().text
            if stream.next().kind == "declare":
                declare = name
            else:
                assign = name
        commands = [self._command(stream, line, column, source)]
        while stream.peek_kind(0) == "pipe":
            stream.next()
            commands.append(self._command(stream, line, column, source))
        return _Pipeline(tuple(commands), declare=declare, assign=assign)

    def _command(self, stream: _TokenStream, line: int, column: int, source: str) -> _Command:
        operands: list[_Operand] = []
        while not stream.done() and stream.peek_kind(0) not in ("pipe", "rparen"):
            operands.append(self._operand(stream, line, column, source))
        if not operands:
            raise self._error(line, column, f"missing value for command (in {source})")
        return _Command(tuple(operands))

    def _operand(self, stream: _TokenStream, line: int, column: int, source: str) -> _Operand:
        token = stream.next()
        operand: _Operand
        if token.kind == "ident":
            operand = _Func(token.text)
        elif token.kind == "var":
            operand = _Var(token.text)
        elif token.kind in ("string", "number", "bool", "nil"):
            operand = _Literal(token.value)
        elif token.kind == "dot":
            operand = _Dot()
        elif token.kind == "field":
            fields = [token.text]
            while stream.attached_field():
                fields.append(stream.next().text)
            return _Dot(tuple(fields))
        elif token.kind == "lparen":
            if self._depth >= MAX_EXPRESSION_DEPTH:
                raise self._error(line, column, f"max expression depth exceeded (in {source})")
            self._depth += 1
            try:
                operand = self._pipeline(stream, line, column, source, top=False)
            finally:
                self._depth -= 1
            if stream.done() or stream.next().kind != "rparen":
                raise self._error(line, column, f"unclosed left paren (in {source})")
        else:
            raise self._error(line, column, f'unexpected "{token.text}" (in {source})')
        fields = []
        while stream.attached_field():
            fields.append(stream.next().text)
        if fields:
            if isinstance(operand, _Literal):
                raise self._error(line, column, f"unexpected . after term (in {source})")
            operand = _Chain(operand, tuple(fields))
        return operand


class _TokenStream:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0

    def done(self) -> bool:
        return self._pos >= len(self._tokens)

    def peek(self) -> _Token:
        return self._tokens[self._pos]

    def peek_kind(self, ahead: int) -> str | None:
        index = self._pos + ahead
        return self._tokens[index].kind if index < len(self._tokens) else None

    def attached_field(self) -> bool:
        """Whether a ``.field`` follows with no space: it belongs to the operand before it."""
        return self.peek_kind(0) == "field" and not self._tokens[self._pos].spaced

    def next(self) -> _Token:
        token = self._tokens[self._pos]
        self._pos += 1
        return token


# --- evaluation ---------------------------------------------------------------------------------


class _EvalError(Exception):
    """An execution error; :meth:`Template.execute` adds the position."""


def _eval_pipeline(
        pipeline: _Pipeline,
        functions: Mapping[str, Callable[..., Any]],
        scope: dict[str, object],
        *,
        final: object,
) -> object:
    value = final
    for command in pipeline.commands:
        value = _eval_command(command, functions, scope, final=value)
        if isinstance(value, str) and len(value) > MAX_RENDERED:
            raise _EvalError(f"value longer than {MAX_RENDERED} characters")
    if pipeline.declare is not None:
        scope[pipeline.declare] = value
    elif pipeline.assign is not None:
        if pipeline.assign not in scope:
            raise _EvalError(f'undefined variable "{pipeline.assign}"')
        scope[pipeline.assign] = value
    return value


def _eval_command(
        command: _Command,
        functions: Mapping[str, Callable[..., Any]],
        scope: dict[str, object],
        *,
        final: object,
) -> object:
    first, rest = command.operands[0], command.operands[1:]
    if isinstance(first, _Func):
        args = [_eval_arg(a, functions, scope) for a in rest]
        if final is not _MISSING:
            args.append(final)
        return _call(first.name, args, functions)
    if rest or final is not _MISSING:
        raise _EvalError(f"can't give argument to non-function {_describe(first)}")
    return _eval_arg(first, functions, scope)


def _eval_arg(
        operand: _Operand,
        functions: Mapping[str, Callable[..., Any]],
        scope: dict[str, object],
) -> object:
    if isinstance(operand, _Literal):
        return operand.value
    if isinstance(operand, _Func):
        return _call(operand.name, [], functions)
    if isinstance(operand, _Var):
        if operand.name == "$":
            return None  # the template's data: Flagger passes nil
        if operand.name not in scope:
            raise _EvalError(f'undefined variable "{operand.name}"')
        return scope[operand.name]
    if isinstance(operand, _Dot):
        if operand.fields:
            raise _EvalError(f'nil data; no entry for key "{operand.fields[0]}"')
        return None
    if isinstance(operand, _Pipeline):
        return _eval_pipeline(operand, functions, scope, final=_MISSING)
    value = _eval_arg(operand.operand, functions, scope)
    where = _describe(operand.operand)
    for name in operand.fields:
        value = _field(value, name, where)
        where = f"{where}.{name}"
    return value


def _field(value: object, name: str, where: str) -> object:
    if isinstance(value, Mapping):
        if name not in value:
            raise _EvalError(f'{where} has no entry for key "{name}"')
        return value[name]
    if value is None:
        raise _EvalError(f"nil pointer evaluating {where}.{name}")
    raise _EvalError(f"can't evaluate field {name} in type {_go_type(value)} ({where})")


def _call(name: str, args: list[object], functions: Mapping[str, Callable[..., Any]]) -> object:
    if name in functions:
        if args:
            raise _EvalError(f"wrong number of args for {name}: want 0 got {len(args)}")
        return functions[name]()
    builtin = _BUILTINS.get(name)
    if builtin is None:
        raise _EvalError(f'function "{name}" not defined')
    return builtin(args)


def _describe(operand: _Operand) -> str:
    if isinstance(operand, _Func):
        return operand.name
    if isinstance(operand, _Var):
        return operand.name
    if isinstance(operand, _Literal):
        return _format(operand.value)
    if isinstance(operand, _Dot):
        return "." + ".".join(operand.fields)
    if isinstance(operand, _Chain):
        return _describe(operand.operand) + "".join(f".{f}" for f in operand.fields)
    return "(pipeline)"


# --- builtins -----------------------------------------------------------------------------------


def _builtin_index(args: list[object]) -> object:
    if not args:
        raise _EvalError("wrong number of args for index: want at least 1 got 0")
    item, keys = args[0], args[1:]
    for key in keys:
        if isinstance(item, Mapping):
            if key not in item:
                raise _EvalError(f'index: map has no entry for key "{_format(key)}"')
            item = item[key]
        elif isinstance(item, Sequence) and isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(item):
                raise _EvalError(f"index out of range: {key}")
            element = item[key]
            item = ord(element) if isinstance(item, str) else element
        else:
            raise _EvalError(f"can't index item of type {_go_type(item)} with {_format(key)}")
    return item


def _builtin_len(args: list[object]) -> object:
    if len(args) != 1:
        raise _EvalError(f"wrong number of args for len: want 1 got {len(args)}")
    item = args[0]
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, Mapping | Sequence):
        return len(item)
    raise _EvalError(f"len of type {_go_type(item)}")


def _builtin_print(args: list[object]) -> object:
    # Go's Sprint: a space between operands when neither side is a string.
    out: list[str] = []
    size = 0
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_format(arg))
        size += len(out[-1]) + 1
        if size > MAX_RENDERED:
            raise _EvalError(f"print: value longer than {MAX_RENDERED} characters")
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _builtin_printf(args: list[object]) -> object:
    if not args or not isinstance(args[0], str):
        raise _EvalError("printf needs a format string as its first argument")
    text, values = args[0], list(args[1:])
    out: list[str] = []
    pos = 0
    used = 0
    size = 0
    for match in _VERB.finditer(text):
        out.append(text[pos:match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if used >= len(values):
            raise _EvalError(f'printf "{text}": missing argument for %{verb}')
        if any(n is not None and int(n) > _MAX_WIDTH for n in (width, precision)):
            raise _EvalError(f'printf "{_shorten(text)}": width or precision above {_MAX_WIDTH}')
        value = values[used]
        used += 1
        out.append(_printf_one(flags, width, precision, verb, value, text))
        size += len(out[-2]) + len(out[-1])
        if size > MAX_RENDERED:
            raise _EvalError(f'printf "{_shorten(text)}": value longer than '
                             f"{MAX_RENDERED} characters")
    out.append(text[pos:])
    if used != len(values):
        raise _EvalError(f'printf "{text}": {len(values) - used} extra argument(s)')
    return "".join(out)


def _printf_one(
        flags: str, width: str | None, precision: str | None, verb: str, value: object, text: str,
) -> str:
    align = "<" if "-" in flags else ">"
    spec_width = width or ""
    if verb in ("s", "v"):
        formatted = _format(value)
        if precision is not None and verb == "s":
            formatted = formatted[:int(precision)]
        return format(formatted, f"{align}{spec_width}")
    if verb == "q" and isinstance(value, str):
        return format(_go_quote(value), f"{align}{spec_width}")
    if verb in ("d", "x", "X", "o", "b") and isinstance(value, int) and not isinstance(value, bool):
        sign = "+" if "+" in flags else ""
        zero = "0" if "0" in flags and "-" not in flags else ""
        kind = "" if verb == "d" else verb
        return format(value, f"{align if not zero else ''}{sign}{zero}{spec_width}{kind}")
    if verb in ("f", "F", "e", "E", "g", "G") and isinstance(value, int | float) \
            and not isinstance(value, bool):
        sign = "+" if "+" in flags else ""
        digits = f".{precision}" if precision is not None else (".6" if verb in "fFeE" else "")
        return format(float(value), f"{align}{sign}{spec_width}{digits}{verb}")
    raise _EvalError(f'printf "{text}": %{verb} is not supported for {_go_type(value)}')


_BUILTINS: Final[dict[str, Callable[[list[object]], object]]] = {
    "index": _builtin_index,
    "len": _builtin_len,
    "print": _builtin_print,
    "printf": _builtin_printf,
}


# --- formatting as Go's fmt %v ------------------------------------------------------------------


def _format(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_go_float(value)
    if isinstance(value, Mapping):
        items = " ".join(f"{_format(k)}:{_format(v)}" for k, v in sorted(value.items()))
        return f"map[{items}]"
    if isinstance(value, Sequence):
        return "[" + " ".join(_format(v) for v in value) + "]"
    return str(value)


def _shorten(text: str, limit: int = 200) -> str:
    """A format string or an action as an error message quotes it: a huge one is cut."""
    return text if len(text) <= limit else text[:limit] + "..."


def _go_quote(value: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    body = "".join(
        escapes.get(c, c if c.isprintable() else f"\\u{ord(c):04x}") for c in value
    )
    return f'"{body}"'


def _go_type(value: object) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, Mapping):
        return "map[string]string"
    if value is None:
        return "nil"
    return type(value).__name__
