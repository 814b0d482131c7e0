"""Building torch modules without initialising their parameters (for `bundle.load_weights`,
which replaces every parameter by the file's tensor)."""
from __future__ import annotations

import contextlib
import threading

import torch
from torch import nn

# ----- building without initialising parameters ---------------------------------------------
# Inside `skipped_initialisation` (one thread), every parameter a module registers (nn.Linear's
# `self.weight = Parameter(torch.empty(...))`, transformers' models, GRU weights, weight-norm
# parametrizations) is noted as a placeholder, and the in-place writes initialisers make
# (normal_, uniform_, zero_, copy_, ...) are skipped on placeholders: their memory, allocated
# by torch.empty and never written, costs neither time nor resident memory. Everything else
# runs as usual, so buffers (persistent or not: positional tables, mel filters, windows) and
# plain tensor attributes are exactly what a normal build computes. `load_weights` then makes
# the file's tensors the parameters (load_state_dict(assign=True)) and checks that no
# placeholder is left. (The meta device would do the same without the placeholders'
# allocations, but its kernels import torch._dynamo on first use: over a second of start-up.)
_INIT_WRITES = frozenset((
    "normal_", "uniform_", "zero_", "fill_", "copy_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
    "clamp_max_", "erfinv_", "exponential_", "bernoulli_", "random_", "geometric_", "log_normal_", "cauchy_",
    "fill_diagonal_", "masked_fill_", "index_fill_", "scatter_", "addcmul_", "addcdiv_", "neg_", "abs_", "sqrt_",
    "pow_", "exp_", "log_", "sign_", "__setitem__",
    # torch.nn.init's functions (each takes the tensor first and returns it; seen whole here)
    "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "trunc_normal_", "orthogonal_",
    "sparse_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
))
_building = threading.local()
_wrap_lock = threading.Lock()
_wrap_users = 0
_original_register_parameter = None


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _SkipInitialisation(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.placeholders: list[torch.Tensor] = []   # kept alive, so their addresses stay theirs
        self.keys: set[int] = set()

    def add(self, param: torch.Tensor) -> None:
        if param.numel():
            self.placeholders.append(param)
            self.keys.add(_storage_key(param))

    def holds(self, t) -> bool:
        return isinstance(t, torch.Tensor) and t.numel() > 0 and _storage_key(t) in self.keys

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_WRITES:
            target = args[0] if args else kwargs.get("tensor")    # torch.nn.init passes tensor=
            if self.holds(target):
                return target
        return func(*args, **kwargs)


def _register_parameter(module: nn.Module, name: str, param) -> None:
    mode = getattr(_building, "mode", None)
    if mode is not None and isinstance(param, torch.Tensor):
        mode.add(param)
    _original_register_parameter(module, name, param)


@contextlib.contextmanager
def skipped_initialisation():
    """Module construction in this thread leaves parameters uninitialised placeholders (see
    above); yields the mode, whose `holds(tensor)` tells a placeholder."""
    global _wrap_users, _original_register_parameter
    with _wrap_lock:
        if _wrap_users == 0 and nn.Module.register_parameter is not _register_parameter:
            _original_register_parameter = nn.Module.register_parameter
            nn.Module.register_parameter = _register_parameter
        _wrap_users += 1
    mode = _SkipInitialisation()
    _building.mode = mode
    try:
        with mode:
            yield mode
    finally:
        _building.mode = None
        with _wrap_lock:
            _wrap_users -= 1
            if _wrap_users == 0 and nn.Module.register_parameter is _register_parameter:   # unless rewrapped since
                nn.Module.register_parameter = _original_register_parameter
                # (_original_register_parameter stays set: a thread that looked the wrapper up
                # just before may still be about to call through it)
