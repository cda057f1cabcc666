"""REDCap calc and branching logic → a Careloop expression, with REDCap's semantics.

REDCap logic is parsed (not pattern-replaced) and re-emitted knowing each field's kind, so the
expression means what it meant in REDCap:

* a choice code in arithmetic is a number: ``[q1]+[q2]`` → ``number(answers.q1) + number(…)``
  (blank gives blank, as in REDCap);
* ``=`` compares codes as REDCap does: ``[sex] = 0`` → ``answers.sex == '0'`` for a choice,
  ``answers.age == 0`` for a number; ``[x] = ''`` is "x is blank";
* ``[q(2)]`` is a checkbox option (1 when ticked, else 0);
* ``^`` is ``**``; ``if``, ``sum``, ``mean``, ``min``, ``max``, ``round``, ``roundup``,
  ``rounddown``, ``abs``, ``sqrt``, ``isnumber``, ``contains`` and ``datediff`` have exact
  equivalents (see :data:`FUNCTIONS`).

Anything else — smart variables (``[event-name]``), cross-event references, functions without an
exact equivalent — is refused with a message: :class:`LogicRefused`.

    >>> kinds = {"q1": "choice", "q2": "choice", "age": "number", "sex": "choice"}
    >>> translate("[q1]+[q2]", kinds, calc=True)
    'number(answers.q1) + number(answers.q2)'
    >>> translate("[sex] = 0 and [age] >= 18", kinds)
    "answers.sex == '0' and answers.age >= 18"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

#: Field kinds the emitter distinguishes.
#: ``choice`` (codes stored as text), ``checkbox`` (a list of codes), ``number`` (stored as a
#: number: integer, decimal, slider, calc), ``date``, ``text``, ``score`` (a hidden calc kept as
#: a form score).
KINDS = ("choice", "checkbox", "number", "date", "text", "score")

#: REDCap function → (status, what it becomes). Read by docs/forms.md's table test.
FUNCTIONS: dict[str, tuple[str, str]] = {
    "if": ("translated", "`(a if condition else b)`"),
    "sum": ("translated", "`sum([...])`, blanks ignored"),
    "mean": ("translated", "`mean([...])`, blanks ignored"),
    "min": ("translated", "`min(...)`, blanks ignored"),
    "max": ("translated", "`max(...)`, blanks ignored"),
    "round": ("translated", "`round(x, n)`, half away from zero; without `n` 0 decimals, as "
              "in REDCap"),
    "roundup": ("translated", "`roundup(x, n)`, away from zero; without `n` 0 decimals"),
    "rounddown": ("translated", "`rounddown(x, n)`, toward zero; without `n` 0 decimals"),
    "abs": ("translated", "`abs(x)`"),
    "sqrt": ("translated", "`sqrt(x)`"),
    "isnumber": ("translated", "`isnumber(x)`"),
    "contains": ("translated", "`contains(text, part)` (case-insensitive)"),
    "datediff": ("translated", "`datediff(a, b, unit, signed)`; 'today' → `today()`"),
    "median": ("refused", "no exact equivalent"),
    "stdev": ("refused", "no exact equivalent"),
    "log": ("refused", "no exact equivalent"),
    "exponential": ("refused", "no exact equivalent"),
    "isblankormissingcode": ("refused", "missing-data codes are not carried"),
    "left": ("refused", "no exact equivalent"),
    "right": ("refused", "no exact equivalent"),
    "mid": ("refused", "no exact equivalent"),
    "length": ("refused", "no exact equivalent"),
    "find": ("refused", "no exact equivalent"),
    "concat": ("refused", "no exact equivalent"),
    "upper": ("refused", "no exact equivalent"),
    "lower": ("refused", "no exact equivalent"),
    "trim": ("refused", "no exact equivalent"),
    "not_contain": ("refused", "no exact equivalent"),
    "starts_with": ("refused", "no exact equivalent"),
    "ends_with": ("refused", "no exact equivalent"),
}
#: Operators and literals, for the docs table.
OPERATORS: dict[str, tuple[str, str]] = {
    "+ - * /": ("translated", "choice codes and number-like text count as numbers; blank gives "
                              "blank"),
    "^": ("translated", "`**`"),
    "= <> != < <= > >=": ("translated", "codes compared as text, numbers as numbers; "
                                        "`= ''` means blank"),
    "and or && ||": ("translated", "`and`, `or`"),
    "[field(code)]": ("translated", "checkbox option: 1 when ticked, else 0"),
    "[event][field]": ("refused", "Careloop forms have no events"),
    "[smart-variable]": ("refused", "e.g. `[event-name]`, `[record-name]`, `[user-name]`"),
}
DATEDIFF_UNITS = ("y", "M", "d", "h", "m", "s")


class LogicRefused(Exception):
    """The logic has no exact Careloop equivalent; ``str(exc)`` says why."""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # ref, num, str, name, op
    text: str
    pos: int


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<ref>\[[^\[\]]*\](?:\[[^\[\]]*\])*)
  | (?P<num>\d+(?:\.\d*)?|\.\d+)
  | (?P<str>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|==|&&|\|\||[-+*/^()=<>,])
""", re.VERBOSE)


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise LogicRefused(f"cannot read {text[pos:pos + 10]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, match.group(), pos))
        pos = match.end()
    return out


# --- syntax tree ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Node:
    op: str                      # ref, num, str, bool, call, neg, not, bin, cmp, and, or
    value: str = ""
    args: tuple[_Node, ...] = ()


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, *texts: str) -> _Tok | None:
        tok = self.peek()
        if tok is not None and (tok.text.lower() if tok.kind == "name" else tok.text) in texts:
            self.i += 1
            return tok
        return None

    def expect(self, text: str) -> None:
        if self.take(text) is None:
            tok = self.peek()
            where = f"column {tok.pos + 1}" if tok else "the end"
            raise LogicRefused(f"expected {text!r} at {where}")

    def parse(self) -> _Node:
        node = self.or_()
        tok = self.peek()
        if tok is not None:
            raise LogicRefused(f"unexpected {tok.text!r} at column {tok.pos + 1}")
        return node

    def or_(self) -> _Node:
        node = self.and_()
        while self.take("or", "||"):
            node = _Node("or", args=(node, self.and_()))
        return node

    def and_(self) -> _Node:
        node = self.not_()
        while self.take("and", "&&"):
            node = _Node("and", args=(node, self.not_()))
        return node

    def not_(self) -> _Node:
        if self.take("not"):
            return _Node("not", args=(self.not_(),))
        return self.cmp()

    def cmp(self) -> _Node:
        node = self.add()
        tok = self.take("=", "==", "<>", "!=", "<", "<=", ">", ">=")
        if tok is not None:
            op = {"=": "==", "<>": "!="}.get(tok.text, tok.text)
            node = _Node("cmp", op, (node, self.add()))
        return node

    def add(self) -> _Node:
        node = self.mul()
        while (tok := self.take("+", "-")) is not None:
            node = _Node("bin", tok.text, (node, self.mul()))
        return node

    def mul(self) -> _Node:
        node = self.pow()
        while (tok := self.take("*", "/")) is not None:
            node = _Node("bin", tok.text, (node, self.pow()))
        return node

    def pow(self) -> _Node:
        node = self.unary()
        if self.take("^"):
            if node.op == "neg":
                raise LogicRefused("-x^y is ambiguous in REDCap; write -(x^y) or (-x)^y")
            node = _Node("bin", "**", (node, self.pow()))
        return node

    def unary(self) -> _Node:
        if self.take("-"):
            return _Node("neg", args=(self.unary(),))
        if self.take("+"):
            return self.unary()
        return self.atom()

    def atom(self) -> _Node:
        tok = self.peek()
        if tok is None:
            raise LogicRefused("the logic ends too early")
        self.i += 1
        if tok.kind == "num":
            return _Node("num", tok.text)
        if tok.kind == "str":
            return _Node("str", tok.text[1:-1])
        if tok.kind == "ref":
            return _Node("ref", tok.text)
        if tok.text == "(":
            node = self.or_()
            self.expect(")")
            return node
        if tok.kind == "name":
            name = tok.text.lower()
            if name in ("true", "false"):
                return _Node("bool", name)
            if self.take("("):
                args: list[_Node] = []
                if not self.take(")"):
                    args.append(self.or_())
                    while self.take(","):
                        args.append(self.or_())
                    self.expect(")")
                return _Node("call", name, tuple(args))
        raise LogicRefused(f"unexpected {tok.text!r} at column {tok.pos + 1}")


# --- emitting ---------------------------------------------------------------------------------

_RANK = {"+": 1, "-": 1, "*": 2, "/": 2, "**": 3}
_REF = re.compile(r"\[([a-z][a-z0-9_]*)(?:\(([A-Za-z0-9_-]+)\))?\]")
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


class _Emitter:
    def __init__(self, kinds: Mapping[str, str], scores: bool) -> None:
        self.kinds = kinds
        self.scores = scores

    def ref(self, text: str) -> tuple[str, str, str | None]:
        """``[name]`` / ``[name(code)]`` → (field key, kind, checkbox code)."""
        match = _REF.fullmatch(text)
        if match is None:
            if text.count("[") > 1:
                raise LogicRefused(f"{text} names another event; Careloop forms have no events")
            raise LogicRefused(f"{text} is a REDCap smart variable with no Careloop equivalent")
        name, code = match.group(1), match.group(2)
        if name not in self.kinds:
            raise LogicRefused(f"[{name}] names no field of this instrument")
        kind = self.kinds[name]
        if kind == "score" and not self.scores:
            raise LogicRefused(f"[{name}] is a hidden calculation (@HIDDEN), imported as a form "
                               "score, which field logic cannot read")
        if code is not None and kind != "checkbox":
            raise LogicRefused(f"{text}: only a checkbox field has options in parentheses")
        if code is None and kind == "checkbox":
            raise LogicRefused(f"{text}: a checkbox field is read one option at a time, "
                               f"[{name}(code)]")
        return name, kind, code

    def number(self, node: _Node) -> str:
        """The node as a number (or null when blank)."""
        if node.op == "num":
            return node.value
        if node.op == "str":
            if _NUMBER.fullmatch(node.value.strip()):
                return node.value.strip()
            if node.value == "":
                return "None"
            raise LogicRefused(f"'{node.value}' is used as a number")
        if node.op == "ref":
            name, kind, code = self.ref(node.value)
            if code is not None:
                return f"(1 if '{code}' in answers.{name} else 0)"
            if kind == "number":
                return f"answers.{name}"
            if kind == "score":
                return f"scores.{name}"
            if kind == "date":
                raise LogicRefused(f"date [{name}] used as a number; use datediff()")
            return f"number(answers.{name})"
        if node.op == "neg":
            inner = self.number(node.args[0])
            return f"-({inner})" if node.args[0].op == "bin" else f"-{inner}"
        if node.op == "bin":
            return self.arithmetic(node)
        if node.op == "call":
            return self.call(node)
        if node.op == "bool":
            return "1" if node.value == "true" else "0"
        return f"(1 if {self.condition(node)} else 0)"

    def arithmetic(self, node: _Node) -> str:
        """``a op b`` with parentheses only where precedence needs them."""
        op, rank = node.value, _RANK[node.value]
        left, right = node.args
        left_text, right_text = self.number(left), self.number(right)
        if left.op == "bin" and (_RANK[left.value] < rank or op == "**"):
            left_text = f"({left_text})"
        if right.op == "bin" and (_RANK[right.value] < rank
                                  or (_RANK[right.value] == rank and op in ("-", "/"))):
            right_text = f"({right_text})"
        if right.op == "neg":
            right_text = f"({right_text})"
        return f"{left_text} {op} {right_text}"

    def condition(self, node: _Node) -> str:
        if node.op == "or" or node.op == "and":
            left, right = (self.condition(a) for a in node.args)
            return f"({left} {node.op} {right})"
        if node.op == "not":
            return f"not {self.condition(node.args[0])}"
        if node.op == "cmp":
            return self.compare(node)
        if node.op == "bool":
            return "True" if node.value == "true" else "False"
        if node.op == "call" and node.value in ("contains", "isnumber"):
            return self.call(node)
        return f"({self.number(node)} != 0)"

    def compare(self, node: _Node) -> str:
        op = node.op if node.op != "cmp" else node.value
        left, right = node.args
        if left.op != "ref" and right.op == "ref":
            left, right = right, left
            op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
        if left.op == "ref":
            name, kind, code = self.ref(left.value)
            if code is not None and right.op in ("str", "num") and op in ("==", "!="):
                ticked = right.value.strip() == "1"
                if right.value.strip() not in ("0", "1"):
                    raise LogicRefused(f"{left.value} compared with '{right.value}', not 0 or 1")
                inside = ticked == (op == "==")
                return f"'{code}' {'in' if inside else 'not in'} answers.{name}"
            if right.op == "str" and right.value == "" and op in ("==", "!="):
                blank = f"answers.{name} in [None, '', []]"
                return blank if op == "==" else f"not ({blank})"
            if code is None and right.op in ("str", "num"):
                literal = right.value.strip() if right.op == "num" else right.value
                if kind in ("choice", "text") and op in ("==", "!="):
                    return f"answers.{name} {op} {_quote(literal)}"
                if kind == "date" and right.op == "str":
                    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?",
                                        literal):
                        raise LogicRefused(f"date [{name}] compared with '{literal}', which is "
                                           "not a Y-M-D date")
                    return f"answers.{name} {op} {_quote(literal.replace(' ', 'T'))}"
        if op in ("==", "!=") and {left.op, right.op} <= {"str", "ref"} and not (
                self._numeric(left) or self._numeric(right)):
            return f"{self.text(left)} {op} {self.text(right)}"
        return f"{self.number(left)} {op} {self.number(right)}"

    def _numeric(self, node: _Node) -> bool:
        return node.op == "ref" and self.ref(node.value)[1] in ("number", "score")

    def text(self, node: _Node) -> str:
        if node.op == "str":
            return _quote(node.value)
        name, _kind, code = self.ref(node.value)
        if code is not None:
            return f"('1' if '{code}' in answers.{name} else '0')"
        return f"answers.{name}"

    def call(self, node: _Node) -> str:
        name, args = node.value, node.args
        status = FUNCTIONS.get(name, ("refused", "unknown function"))
        if status[0] != "translated":
            raise LogicRefused(f"function {name}() has no exact Careloop equivalent "
                               f"({status[1]})")
        if name == "if":
            if len(args) != 3:
                raise LogicRefused("if() needs three arguments")
            return (f"({self.number(args[1])} if {self.condition(args[0])} "
                    f"else {self.number(args[2])})")
        if name in ("sum", "mean"):
            return f"{name}([{', '.join(self.number(a) for a in args)}])"
        if name in ("min", "max"):
            return f"{name}([{', '.join(self.number(a) for a in args)}])"
        if name in ("round", "roundup", "rounddown"):
            # REDCap: "if the decimal places are not provided, it defaults to 0"
            if len(args) == 1:
                return f"{name}({self.number(args[0])}, 0)"
            if len(args) != 2 or args[1].op != "num" or "." in args[1].value:
                raise LogicRefused(f"{name}() with decimal places that are not a whole number "
                                   "is not translated")
            return f"{name}({self.number(args[0])}, {args[1].value})"
        if name in ("abs", "sqrt"):
            if len(args) != 1:
                raise LogicRefused(f"{name}() needs one argument")
            return f"{name}({self.number(args[0])})"
        if name == "isnumber":
            if len(args) != 1 or args[0].op != "ref":
                raise LogicRefused("isnumber() needs one field")
            return f"isnumber({self.text(args[0])})"
        if name == "contains":
            if len(args) != 2 or args[1].op != "str":
                raise LogicRefused("contains() needs a field and quoted text")
            return f"contains({self.text(args[0])}, {_quote(args[1].value)})"
        return self.datediff(args)

    def datediff(self, args: tuple[_Node, ...]) -> str:
        if not 3 <= len(args) <= 5:
            raise LogicRefused("datediff() needs two dates and a unit")
        dates = [self.date(a) for a in args[:2]]
        unit = args[2]
        if unit.op != "str" or unit.value not in DATEDIFF_UNITS:
            raise LogicRefused(f"datediff() unit must be one of {', '.join(DATEDIFF_UNITS)}")
        signed = "False"
        for extra in args[3:]:
            if extra.op == "str" and extra.value in ("ymd", "mdy", "dmy"):
                continue  # Careloop stores dates as ISO whatever REDCap displayed
            if extra.op == "bool":
                signed = "True" if extra.value == "true" else "False"
                continue
            raise LogicRefused("datediff(): the format must be 'ymd', 'mdy' or 'dmy' and the "
                               "last argument true or false")
        return f"datediff({dates[0]}, {dates[1]}, '{unit.value}', {signed})"

    def date(self, node: _Node) -> str:
        if node.op == "str" and node.value.lower() == "today":
            return "today()"
        if node.op == "str" and node.value.lower() == "now":
            return "now()"
        if node.op == "ref":
            name, kind, _code = self.ref(node.value)
            if kind in ("date", "text"):
                return f"answers.{name}"
            raise LogicRefused(f"datediff() on [{name}], which is not a date")
        if node.op == "str" and re.fullmatch(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?",
                                             node.value):
            return _quote(node.value.replace(" ", "T"))
        raise LogicRefused("datediff() needs date fields, 'today' or a Y-M-D date")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def translate(logic: str, kinds: Mapping[str, str], *, calc: bool = False,
              scores: bool = False) -> str:
    """REDCap logic → a Careloop expression (a number for ``calc``, else a condition).

    Fields of kind ``score`` (hidden calculations imported as form scores) read as
    ``scores.<name>``, allowed only when ``scores`` (the expression is itself a score's).
    Raises :class:`LogicRefused` when it has no exact equivalent.
    """
    tree = _Parser(logic).parse()
    emitter = _Emitter(kinds, scores)
    text = emitter.number(tree) if calc else emitter.condition(tree)
    return _strip_outer(text)


def _strip_outer(text: str) -> str:
    """``(a + b)`` → ``a + b`` when the parentheses wrap the whole text."""
    while text.startswith("(") and text.endswith(")"):
        depth, quote = 0, ""
        for index, char in enumerate(text):
            if quote:
                quote = "" if char == quote and text[index - 1] != "\\" else quote
                continue
            if char in "'\"":
                quote = char
            depth += char == "("
            depth -= char == ")"
            if depth == 0 and index < len(text) - 1:
                return text
        text = text[1:-1]
    return text
