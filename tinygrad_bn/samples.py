"""Sample calls for every primitive of the op table, shared by the tests and ``gradcheck``.

``SAMPLES[op_name]`` is a list of ``Sample(label, fn, shapes, domain)``: ``fn`` takes Tensors and
applies the op through its public ``Tensor`` method; ``shapes`` are the input shapes; ``domain``
says which values the inputs may take (``"any"``, ``"positive"``, ``"away_from_zero"`` for kinks
and poles, ``"distinct"`` for max, where ties are kinks). Adding a primitive means adding its
entry here; the generic tests then check its forward, gradient, dtypes and broadcasting.
"""
from collections import namedtuple

import numpy as np

Sample = namedtuple("Sample", "label fn shapes domain")


def make_inputs(sample, rng, dtype=np.float64):
    """Random inputs for ``sample`` that respect its domain."""
    arrays = []
    for shape in sample.shapes:
        if sample.domain == "positive":
            a = rng.uniform(0.5, 2.0, shape)
        elif sample.domain == "away_from_zero":
            a = rng.uniform(0.3, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        elif sample.domain == "distinct":
            n = int(np.prod(shape))
            a = (rng.permutation(n) * 0.37 + rng.uniform(0, 0.1, n)).reshape(shape) - n * 0.18
        else:
            a = rng.standard_normal(shape)
        arrays.append(np.asarray(a, dtype=dtype))
    return arrays


_IDX = np.array([0, 2, 2, 1])  # a repeated index: its gradient must accumulate

SAMPLES = {
    "add": [Sample("x + y", lambda x, y: x + y, [(3, 4), (3, 4)], "any"),
            Sample("x + y broadcast (3,1)+(4,)", lambda x, y: x + y, [(3, 1), (4,)], "any"),
            Sample("x + y 0-d", lambda x, y: x + y, [(), (2, 3)], "any")],
    "sub": [Sample("x - y", lambda x, y: x - y, [(3, 4), (3, 4)], "any"),
            Sample("x - y broadcast (2,3,4)-(3,1)", lambda x, y: x - y, [(2, 3, 4), (3, 1)],
                   "any")],
    "mul": [Sample("x * y", lambda x, y: x * y, [(3, 4), (3, 4)], "any"),
            Sample("x * y broadcast (1,4)*(3,1)", lambda x, y: x * y, [(1, 4), (3, 1)], "any")],
    "div": [Sample("x / y", lambda x, y: x / y, [(3, 4), (3, 4)], "away_from_zero"),
            Sample("x / y broadcast (3,4)/(4,)", lambda x, y: x / y, [(3, 4), (4,)],
                   "away_from_zero")],
    "pow": [Sample("x ** y", lambda x, y: x ** y, [(3, 4), (3, 4)], "positive"),
            Sample("x ** y broadcast (3,4)**(4,)", lambda x, y: x ** y, [(3, 4), (4,)],
                   "positive")],
    "neg": [Sample("-x", lambda x: -x, [(3, 4)], "any")],
    "pow_scalar": [Sample("x ** 2", lambda x: x ** 2, [(3, 4)], "any"),
                   Sample("x ** -1.5", lambda x: x ** -1.5, [(3, 4)], "positive")],
    "sqrt": [Sample("sqrt(x)", lambda x: x.sqrt(), [(3, 4)], "positive")],
    "exp": [Sample("exp(x)", lambda x: x.exp(), [(3, 4)], "any")],
    "log": [Sample("log(x)", lambda x: x.log(), [(3, 4)], "positive")],
    "relu": [Sample("relu(x)", lambda x: x.relu(), [(3, 4)], "away_from_zero")],
    "sigmoid": [Sample("sigmoid(x)", lambda x: x.sigmoid(), [(3, 4)], "any")],
    "tanh": [Sample("tanh(x)", lambda x: x.tanh(), [(3, 4)], "any")],
    # a float64 <-> float32 round trip is not exact: the sample converts to the same dtype
    "matmul": [Sample("x @ y", lambda x, y: x @ y, [(3, 4), (4, 5)], "any"),
               Sample("x @ y batched (2,3,4)@(4,5)", lambda x, y: x @ y, [(2, 3, 4), (4, 5)],
                      "any"),
               Sample("x @ y vector (4,)@(4,5)", lambda x, y: x @ y, [(4,), (4, 5)], "any")],
    "sum": [Sample("sum(x)", lambda x: x.sum(), [(3, 4)], "any"),
            Sample("sum(x, axis=0)", lambda x: x.sum(axis=0), [(3, 4)], "any"),
            Sample("sum(x, axis=(0,2), keepdims)", lambda x: x.sum(axis=(0, 2), keepdims=True),
                   [(2, 3, 4)], "any")],
    "mean": [Sample("mean(x)", lambda x: x.mean(), [(3, 4)], "any"),
             Sample("mean(x, axis=-1, keepdims)", lambda x: x.mean(axis=-1, keepdims=True),
                    [(3, 4)], "any")],
    "max": [Sample("max(x)", lambda x: x.max(), [(3, 4)], "distinct"),
            Sample("max(x, axis=1)", lambda x: x.max(axis=1), [(3, 4)], "distinct")],
    "reshape": [Sample("reshape(x, (4,3))", lambda x: x.reshape(4, 3), [(3, 4)], "any")],
    "transpose": [Sample("transpose(x, (2,0,1))", lambda x: x.transpose(2, 0, 1),
                         [(2, 3, 4)], "any")],
    "expand": [Sample("expand(x, (3,4))", lambda x: x.expand(3, 4), [(1, 4)], "any")],
    "cast": [Sample("x.to(x.dtype, copy=True)", lambda x: x.to(x.dtype, copy=True), [(3, 4)],
                    "any")],
    "getitem": [Sample("x[1:, ::2]", lambda x: x[1:, ::2], [(3, 4)], "any"),
                Sample("x[[0,2,2,1]] (repeated)", lambda x: x[_IDX], [(3, 4)], "any")],
    "scatter_add": [Sample("scatter_add(x, [0,2,2,1], (3,4)) (repeated)",
                           lambda x: x.scatter_add(_IDX, (3, 4)), [(4, 4)], "any"),
                    Sample("scatter_add(x, (1:, ::2), (3,4))",
                           lambda x: x.scatter_add((slice(1, None), slice(None, None, 2)), (3, 4)),
                           [(2, 2)], "any")],
}
