"""The CLI's step driver (``cli.run.run_steps``) checkpoints between chunks without a new set-up."""

import jax
import numpy as np

from jaxcorr import cli, data, nn, train


def test_save_every_uses_one_fit_call_and_saves_exact_states():
    X, y = data.synthetic(0, 4, 6)
    p0 = nn.init(jax.random.key(0), 128, 6)
    opt = train.sgd(0.5, momentum=0.9)
    calls, saved = [], []

    def fit(*args, **kwargs):
        calls.append(kwargs["steps"])
        return train.fit(*args, **kwargs)

    plan = cli.run.Plan(X=X, y=y, b=1.0, optimizer=opt, step0=0, steps=6, platform="cpu")
    out = cli.run.run_steps(fit, p0, None, plan, method="dense", save=lambda p, s, step: saved.append((step, p, s)),
                            save_every=2)
    assert calls == [6], f"one fit call (one set-up) for the whole run, got calls of {calls} steps"
    assert [s[0] for s in saved] == [2, 4]  # the final state is the caller's to save
    for step, p, s in saved:  # each checkpoint is the state after exactly `step` steps
        p_ref, h_ref = train.fit(p0, X, y, steps=step, method="dense", optimizer=opt, b=1.0)
        np.testing.assert_array_equal(p.W, p_ref.W)
        for u, v in zip(jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(h_ref.opt_state)):
            np.testing.assert_array_equal(u, v)
    p6, _ = train.fit(p0, X, y, steps=6, method="dense", optimizer=opt, b=1.0)
    np.testing.assert_array_equal(out.params.W, p6.W)
    assert out.saved_at == 4 and len(out.history.loss) == 6
