r"""Mini-batch Adam with iterate averaging for :meth:`LogisticRegression.partial_fit`.

One call of :func:`adam_pass` makes one pass over a batch of data, split into
mini-batches of ``batch_size`` rows. Each mini-batch costs one fused
objective+gradient evaluation (:meth:`fastce._linear_loss.LinearLoss.loss_gradient`
on the rows of the mini-batch, a view when the rows are contiguous) and one
Adam step (Kingma & Ba, 2015) with a constant step size ``learning_rate``
and the default moments :math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.999`,
:math:`\epsilon = 10^{-8}`, bias-corrected.

The model that is returned (``coef_``) is not the last iterate but the
average of the iterates (Polyak--Ruppert averaging): the uniform average over
the first ``averaging_window`` steps, then an exponential moving average
with that time constant. A constant step with averaging is the classical
schedule for stochastic convex problems (Bach & Moulines, 2013): the last
iterate keeps moving in a noise ball of the size of the step, the average
converges to its centre.

Objective of a mini-batch ``B`` of sample weight :math:`S_B`, with :math:`S`
the weight of one pass over the data:

.. math::
    \frac{1}{S_B} \sum_{i \in B} s_i\, \ell(y_i, W x_i + b)
    + \frac{1}{2\, C\, S} \lVert W \rVert_F^2,

an unbiased estimate of the objective of :meth:`LogisticRegression.fit`
on the whole data when the mini-batches are drawn from it.
"""

import numpy as np
from sklearn.utils.validation import assert_all_finite

from ._linear_loss import LinearLoss

__all__ = ["adam_pass"]

BETA1 = 0.9
BETA2 = 0.999
EPSILON = 1e-8


class SGDState:
    """The optimiser's state: flat float64 vectors and counters.

    ``w`` the last iterate, ``w_avg`` the averaged iterate (the model),
    ``m`` and ``v`` Adam's first and second moments, ``t`` the number of
    steps, ``sw_seen`` the sample weight seen.
    """

    def __init__(self, w, w_avg, m, v, t, sw_seen):
        self.w, self.w_avg, self.m, self.v = w, w_avg, m, v
        self.t = int(t)
        self.sw_seen = float(sw_seen)


def adam_pass(
    X, y, sample_weight, state, *, n_classes, fit_intercept, C, epoch_size, batch_size, learning_rate,
    averaging_window, n_threads=None, estimator_name="LogisticRegression",
):  # fmt: skip
    """One pass of mini-batch Adam over ``(X, y, sample_weight)``, updating ``state`` in place.

    ``y`` holds class indices; ``C`` is ``math.inf`` without penalty;
    ``epoch_size`` is ``S`` of the penalty or None for the weight seen so far
    (including the current mini-batch). Mini-batches of zero weight are
    skipped. Returns the number of steps made.
    """
    n = X.shape[0]
    n_steps = 0
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        sw = None if sample_weight is None else sample_weight[start:stop]
        sw_batch = float(stop - start) if sw is None else float(np.sum(sw, dtype=np.float64))
        if not sw_batch > 0:
            continue
        state.sw_seen += sw_batch
        S = state.sw_seen if epoch_size is None else float(epoch_size)
        l2 = 0.0 if np.isinf(C) else 1.0 / (C * S)
        Xb = X[start:stop]
        loss = LinearLoss(
            Xb, y[start:stop], sw, n_classes=n_classes, fit_intercept=fit_intercept, l2_reg_strength=l2,
            n_threads=n_threads,
        )  # fmt: skip
        f, g = loss.loss_gradient(state.w)
        if not (np.isfinite(f) and np.all(np.isfinite(g))):
            assert_all_finite(Xb, input_name="X", estimator_name=estimator_name)
            raise FloatingPointError(
                f"partial_fit: the gradient became non-finite after {state.t} step(s); lower learning_rate "
                "or scale the features"
            )
        state.t += 1
        t = state.t
        state.m *= BETA1
        state.m += (1.0 - BETA1) * g
        state.v *= BETA2
        state.v += (1.0 - BETA2) * np.square(g)
        m_hat = state.m / (1.0 - BETA1**t)
        v_hat = state.v / (1.0 - BETA2**t)
        state.w -= learning_rate * m_hat / (np.sqrt(v_hat) + EPSILON)
        state.w_avg += (state.w - state.w_avg) * max(1.0 / t, 1.0 / averaging_window)
        n_steps += 1
    return n_steps
