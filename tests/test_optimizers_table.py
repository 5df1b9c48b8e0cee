"""jaxcorr.optimizers: the one table of optimizer names shared by the command line and the scripts.

Each name builds what its row says (checked on the update it computes, against optax directly), an
unknown name is refused naming the choices, and the CLI offers exactly the table's names and builds
its optimizers from the table.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcorr import cli, optimizers, train


def _updates(opt, steps=3):
    """The updates ``opt`` makes for three fixed gradients (state carried), as numpy arrays."""
    W = jnp.zeros((2, 3))
    state = opt.init(W)
    out = []
    for t in range(steps):
        g = jnp.arange(6.0).reshape(2, 3) * (t + 1) - 2.0
        u, state = opt.update(g, state, W)
        out.append(np.asarray(u))
    return out


# name -> the optax transformation its row claims, at learning rate 0.3
REFERENCE = {
    "sgd": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": lambda lr: optax.adam(lr),
}


def test_reference_covers_the_table():
    assert set(REFERENCE) == set(optimizers.TABLE) and optimizers.NAMES == tuple(optimizers.TABLE)


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_each_name_builds_what_its_row_says(name):
    opt = optimizers.make(name, 0.3)
    assert isinstance(opt, optax.GradientTransformation)
    for got, want in zip(_updates(opt), _updates(REFERENCE[name](0.3))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    s = optimizers.spec(name)
    assert isinstance(opt, train.LinearOptimizer) == s.span  # the span (Gram) path is by construction
    assert optimizers.describe(name, 0.3) == s.label.format(lr=0.3)
    assert "0.3" in optimizers.describe(name, 0.3)


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_default_learning_rate_is_the_tables(name):
    lr = optimizers.spec(name).learning_rate
    for got, want in zip(_updates(optimizers.make(name)), _updates(REFERENCE[name](lr))):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert optimizers.describe(name) == optimizers.describe(name, lr)


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_state_slots_count_the_arrays_the_size_of_W(name):
    W = jnp.zeros((5, 4))
    leaves = [x for x in __import__("jax").tree_util.tree_leaves(optimizers.make(name).init(W))
              if getattr(x, "shape", ()) == W.shape]
    assert len(leaves) == optimizers.spec(name).state_slots


@pytest.mark.parametrize("bad", ["lion", "SGD", "", None, 3])
def test_unknown_name_is_refused_naming_the_choices(bad):
    for call in (optimizers.make, optimizers.describe, optimizers.spec):
        with pytest.raises(ValueError, match=r"unknown optimizer .*; choose one of sgd, momentum, adam"):
            call(bad)


def test_sgd_refuses_a_bad_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.make("momentum", -1.0)


def _cli_choices() -> list[str]:
    """The ``--optimizer`` choices of ``jaxcorr train``, read from the parser's own refusal."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--optimizer", "no-such-optimizer"])
    m = re.search(r"choose from ([^)]*)\)", err.getvalue())
    assert m, err.getvalue()
    return [c.strip(" '\"") for c in m.group(1).split(",")]


def test_cli_choices_are_the_tables_names():
    assert _cli_choices() == list(optimizers.NAMES)
    assert list(cli.OPTIMIZERS) == list(optimizers.NAMES)  # the --optimizer help text's entries


@pytest.mark.parametrize("name", optimizers.NAMES)
def test_cli_builds_its_optimizer_from_the_table(name):
    args = cli.build_parser().parse_args(["train", "--optimizer", name, "--lr", "0.25"])
    assert args.optimizer == name
    opt = cli._make_optimizer(name, 0.25)
    assert opt is cli._make_optimizer(name, 0.25)  # one object per (name, lr): compiled code reused
    for got, want in zip(_updates(opt), _updates(optimizers.make(name, 0.25))):
        np.testing.assert_array_equal(got, want)


def test_doctests():
    result = doctest.testmod(optimizers, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
