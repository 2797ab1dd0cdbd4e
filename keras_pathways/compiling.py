"""How a method's step is compiled when it holds a loop.

XLA compiles a whole step into one program, which is the fastest way to run a
one-pass method. A step with a ``tf.while_loop`` (Integrated Gradients,
SmoothGrad, NeuronIntGrad scores, DGR gate training, greedy pruning) is
different: on a CPU an XLA ``While`` runs its convolutions 5-10x slower than
the same body compiled on its own (measured with TF 2.21; see the README's
benchmarks). So for those methods the engine traces the step as a plain
``tf.function`` and compiles only the parts: each loop body (and each
``part``) becomes its own XLA program, launched once per iteration.

Method code uses ``while_loop`` and ``part`` below instead of ``tf.while_loop``
and plain calls; outside a jit trace they do exactly what TF does.

Parts have a kind: "pass" (a forward/backward pass: convolutions) or
"selection" (the percentile selection: sorting-like integer work). With
``jit_compile="auto"`` on a CPU the engine compiles only the selection parts
with XLA and runs the passes as a plain ``tf.function``, which measured
faster for convolutions on CPUs (README, "Speed").
"""

import contextlib
import contextvars

import tensorflow as tf

_JIT_PARTS = contextvars.ContextVar("keras_pathways_jit_parts", default=None)

#: The part kinds each ``jit_parts`` mode compiles with XLA. "whole": the step
#: is being traced as one XLA program (no parts of its own, no dynamic shapes);
#: None (no mode set, e.g. a caller's own ``tf.function``): as "whole", the
#: safe assumption.
_COMPILED_KINDS = {None: (), "whole": (), False: (), "all": ("pass", "selection"),
                   "selection": ("selection",)}


@contextlib.contextmanager
def jit_parts(mode):
    """While active, these ``part`` and ``while_loop`` bodies are compiled with XLA.

    Args:
        mode: True or "all" (every part), "selection" (only selection parts),
            False (none: a plain ``tf.function``), "whole" (none: the step is
            one XLA program).
    """
    mode = "all" if mode is True else (mode or False)
    if mode not in _COMPILED_KINDS:
        raise ValueError(
            f"Expected jit_parts mode True, False, 'all', 'selection' or 'whole'. Received: {mode!r}.")
    token = _JIT_PARTS.set(mode)
    try:
        yield
    finally:
        _JIT_PARTS.reset(token)


def dynamic_shapes_allowed():
    """Whether the step being traced may use ops of data-dependent shape (``tf.where``).

    True only under a ``jit_parts`` mode that traces a plain ``tf.function``
    (False, "selection", "all"); inside one XLA program, or when no mode was
    set, such ops cannot compile.
    """
    return _JIT_PARTS.get() in (False, "all", "selection")


def part(fn, kind="pass"):
    """``fn`` compiled with XLA when the active ``jit_parts`` mode covers ``kind``, else ``fn``."""
    if kind in _COMPILED_KINDS[_JIT_PARTS.get()]:
        return tf.function(fn, jit_compile=True, autograph=False)
    return fn


def while_loop(cond, body, loop_vars, **kwargs):
    """``tf.while_loop`` whose body is one XLA program per iteration (see module doc).

    The loop variables keep their static shapes across iterations (a body
    whose ops lose a static batch size, e.g. through a dynamic reshape, would
    otherwise fail the loop's shape check).
    """

    def shaped_body(*args):
        return tf.nest.map_structure(_with_shape_of, tuple(body(*args)), args)

    return tf.while_loop(cond, part(shaped_body), loop_vars, **kwargs)


def _with_shape_of(tensor, like):
    tensor = tf.convert_to_tensor(tensor)
    like_shape = getattr(like, "shape", None)
    if like_shape is not None and not tf.executing_eagerly():
        tensor.set_shape(like_shape)
    return tensor
