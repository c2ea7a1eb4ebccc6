"""The words of a drawing: an op's picture from the op table, names, numbers, shapes, summaries.

Every ``Op`` carries ``show = (label, one derivative text per input)``: templates whose
placeholders are ``{x}``, ``{y}``, ``{out}`` (the names of the inputs and of the result), the
op's attributes (``{exponent}``, ``{axis}``, ...) and three the renderer works out from the
input: ``{n}`` (how many elements a reduction adds up into each result), ``{spread}`` (where
the reduced gradient is copied back to) and ``{in_shape}``. The label is the op written as an
expression of its inputs, e.g. ``{x}^{exponent}``: it names a result nobody named,
``(x − μ_B)²``. An op without ``show`` is drawn by its name.
"""
import re
import string

import numpy as np

INPUTS = ("x", "y")  # the placeholders of the inputs, in order (as ``Op`` names them)
_FORMATTER = string.Formatter()
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def label(op, attrs, names):
    """The op applied to the named inputs, from its label: ``(x − μ_B)²``."""
    text = _show(op)[0]
    fields = {f for _, f, _, _ in _parse(op, text) if f}
    if not fields & set(INPUTS):  # a label that does not place its inputs: f(x, y)
        text += "(" + ", ".join("{%s}" % n for n in INPUTS[:len(names)]) + ")"
    return fill(text, dict(zip(INPUTS, names)), attrs, op=op)


def derivative(op, i, attrs, names, out, in_shape):
    """The local derivative of ``op`` applied to the incoming gradient on its way to input i."""
    show = _show(op)
    if i + 1 >= len(show):
        return f"vjp of {op.name}"
    values = dict(zip(INPUTS, names), out=out)
    return fill(show[i + 1], values, attrs, _derived(attrs, in_shape), op=op)


def _show(op):
    return tuple(getattr(op, "show", None) or (op.name,))


def _parse(op, template):
    try:
        return list(_FORMATTER.parse(template))
    except ValueError as e:
        name = getattr(op, "name", "?")
        raise ValueError(f"Op {name}: show text {template!r} is not a template ({e}); write "
                         f"placeholders as {{x}}, {{y}}, {{out}} or an attribute's name, and "
                         f"literal braces doubled") from None


def _derived(attrs, in_shape):
    """The placeholders the op table leaves to the renderer: {in_shape}, {n}, {spread}."""
    out = {"in_shape": shape_only(in_shape)}
    axis = attrs.get("axis")
    if isinstance(axis, tuple):  # a reduction: the gradient is copied back over ``axis``
        out["n"] = int(np.prod([in_shape[k] for k in axis], dtype=np.int64))
        if len(axis) == len(in_shape):
            out["spread"] = "to every entry"
        elif axis == (0,) and len(in_shape) == 2:
            out["spread"] = "to every row"
        else:
            out["spread"] = (f"along axis {axis[0]}" if len(axis) == 1
                             else f"along axes {value_text(axis)}")
    return out


def fill(template, names, attrs, derived=None, op=None):
    """``template`` with its placeholders filled; one it cannot fill is left as ``{name}``.

    A compound name is parenthesized unless the template already encloses it, "÷{y}" gives
    "÷(σ²_B + ε)" but "exp({x})" no double parentheses; then "^(2−1)" is worked out, "^1"
    dropped and a small integer power set as a superscript.
    """
    parts = _parse(op, template)
    text = ""
    for k, (literal, field, _, _) in enumerate(parts):
        text += literal
        if field is None:
            continue
        after = parts[k + 1][0][:1] if k + 1 < len(parts) else ""
        enclosed = text[-1:] in ("", "(", "[") and after in ("", ")", "]", ",")
        if field in names:
            text += names[field] if enclosed else wrap(names[field])
        elif field in attrs:
            text += value_text(attrs[field], enclosed)
        elif derived and field in derived:
            text += str(derived[field])
        else:
            text += "{" + field + "}"
    return _tidy(text)


def _tidy(text):
    text = re.sub(r"\((-?\d+(?:\.\d+)?)−(\d+(?:\.\d+)?)\)",
                  lambda m: f"{float(m.group(1)) - float(m.group(2)):g}", text)
    return re.sub(r"\^(-?\d)(?![\d.])",
                  lambda m: "" if m.group(1) == "1" else m.group(1).translate(_SUPERSCRIPT),
                  text)


def wrap(name):
    """Parenthesize a compound name so '÷' and '·' bind as they should: "x − μ_B" but not
    "√(σ²_B + ε)" or "(x − μ_B)²" (operators only inside brackets)."""
    depth = 0
    for c in name:
        depth += (c in "([") - (c in ")]")
        if depth == 0 and c in " +−·/@÷^":
            return f"({name})"
    return name


def value_text(v, enclosed=False, limit=24):
    """An attribute as it reads in a drawing: 2, 1:, ::2, float32, (0, 2); a tuple that the
    template already encloses loses its own parentheses ("[{index}]" gives "[1:, ::2]")."""
    if isinstance(v, (bool, np.bool_)):
        text = str(bool(v))
    elif isinstance(v, (float, np.floating)):
        text = f"{v:g}"
    elif isinstance(v, slice):
        text = ":".join("" if s is None else str(s) for s in (v.start, v.stop))
        text += "" if v.step is None else f":{v.step}"
    elif v is Ellipsis:
        text = "..."
    elif isinstance(v, np.ndarray):
        text = np.array2string(v, separator=", ", threshold=6, edgeitems=2)
    elif isinstance(v, (np.dtype, type)):
        text = np.dtype(v).name
    elif isinstance(v, (tuple, list)):
        inner = ", ".join(value_text(e, limit=limit) for e in v)
        text = inner if enclosed or len(v) == 1 else f"({inner})"
    else:
        text = str(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def op_line(op, attrs):
    """The op's name and the attributes that change what it computes: "mean  axis=0  keepdims"
    (a flag shows its name when set)."""
    words = [op.name]
    for key, v in attrs.items():
        if isinstance(v, (bool, np.bool_)):
            words += [key] if v else []
        else:
            words.append(f"{key}={value_text(v)}")
    return "  ".join(words)


# ---- numbers, shapes, summaries ----

def number(a):
    return f"{np.asarray(a).item():.4g}"


def shape_only(shape):
    return "scalar" if len(shape) == 0 else "(" + ", ".join(str(n) for n in shape) + ")"


def shape_text(t):
    return f"{shape_only(t.shape)} {t.dtype}"


def summary(a):
    """mean, std, min, max of an array; a single number as itself."""
    a = np.asarray(a)
    if a.size == 1:
        return number(a)
    if a.size == 0:
        return "empty"
    with np.errstate(invalid="ignore", over="ignore"):  # -inf entries (masked classes)
        return (f"mean {a.mean():.3g}  std {a.std():.3g}  "
                f"min {a.min():.3g}  max {a.max():.3g}")


def data_lines(a):
    text = np.array2string(np.asarray(a), precision=3, threshold=12, edgeitems=2,
                           max_line_width=48, suppress_small=True)
    return text.splitlines()
