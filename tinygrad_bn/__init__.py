"""tinygrad_bn: a small numpy autodiff framework whose centrepiece is batch normalization."""
from . import nn, optim
from .autograd import enable_grad, is_grad_enabled, no_grad
from .functional_grad import grad
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .hessian import hvp, top_hessian_eigenvalue
from .jit import Jit, JitError, jit
from .tensor import Tensor

__version__ = "0.1.0"
__all__ = ["Tensor", "nn", "optim", "no_grad", "enable_grad", "is_grad_enabled", "grad",
           "gradcheck", "gradgradcheck", "GradcheckError", "hvp", "top_hessian_eigenvalue",
           "jit", "Jit", "JitError"]
