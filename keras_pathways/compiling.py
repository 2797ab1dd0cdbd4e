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
"""

import contextlib
import contextvars

import tensorflow as tf

_JIT_PARTS = contextvars.ContextVar("keras_pathways_jit_parts", default=False)


@contextlib.contextmanager
def jit_parts(enabled):
    """While active, ``part`` and ``while_loop`` bodies are compiled with XLA."""
    token = _JIT_PARTS.set(bool(enabled))
    try:
        yield
    finally:
        _JIT_PARTS.reset(token)


def part(fn):
    """``fn`` compiled with XLA inside a jit trace of a looping step, else ``fn``."""
    if _JIT_PARTS.get():
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
