"""``tinygrad-bn graph``: draw one batch-norm layer's computation graph after a backward pass."""
import os
import sys

from ..viz import FORMATS, GraphvizNotFoundError, render_batchnorm_graph
from . import seed

HELP = "render the batch-norm computation graph (with gradients) to an svg/png/pdf/dot file"


def add_arguments(parser):
    parser.add_argument("--out", default="bn_graph.svg", metavar="PATH",
                        help="output file; its suffix picks the format: "
                             f"{', '.join('.' + f for f in FORMATS)} (default bn_graph.svg)")
    parser.add_argument("--model", default="bn", choices=["bn", "mlp"],
                        help="bn: one BatchNorm1d layer (default); mlp: the demo's "
                             "784-100-100-100-10 MLP, layers collapsed, the first BatchNorm1d "
                             "expanded")
    parser.add_argument("--backward", action="store_true",
                        help="draw the gradient computation: each derivative rule in the order "
                             "backward() applies it")
    parser.add_argument("--no-grad", dest="grad", action="store_false",
                        help="leave out the value and gradient summaries")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")


def run(args):
    suffix = os.path.splitext(args.out)[1].lstrip(".").lower()
    if suffix not in FORMATS:
        print(f"tinygrad-bn graph: cannot tell the format of {args.out!r}; give --out a suffix "
              f"among {', '.join('.' + f for f in FORMATS)}", file=sys.stderr)
        return 2
    try:
        path = render_batchnorm_graph(args.out, model=args.model, backward=args.backward,
                                      show_grad=args.grad, seed=args.seed)
    except GraphvizNotFoundError as e:
        print(f"tinygrad-bn graph: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
