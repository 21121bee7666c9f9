"""Estimator fit: fastce.LogisticRegression against scikit-learn's (multinomial, lbfgs)."""

import warnings

import numpy as np

from . import common


def _estimator_class(peer):
    if peer == "sklearn":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression
    common.require_peer("fastce")
    import fastce

    cls = getattr(fastce, "LogisticRegression", None)
    if cls is None:
        try:
            from fastce.linear_model import LogisticRegression as cls
        except ImportError:
            common.skip("fastce.LogisticRegression does not exist in this version")
    return cls


def _make_estimator(cls, **wanted):
    """An estimator with those of ``wanted`` that its constructor knows."""
    est = cls()
    known = est.get_params()
    return est.set_params(**{k: v for k, v in wanted.items() if k in known})


class LogisticRegressionFit:
    """Fit on 20,000 × 100 float64 features, 10 classes (2,000 × 20, 5 classes with FASTCE_ASV_SMALL), C=1, at most 100 lbfgs iterations."""

    params = [[(2_000, 20, 5) if common.SMALL else (20_000, 100, 10)], ["fastce", "sklearn"]]
    param_names = ["n_samples, n_features, n_classes", "peer"]
    timeout = 600

    def setup(self, size, peer):
        from sklearn.datasets import make_classification

        n, d, k = size
        self.cls = _estimator_class(peer)
        X, y = make_classification(n_samples=n, n_features=d, n_informative=d // 2, n_classes=k,
                                   random_state=0)  # fmt: skip
        self.X, self.y = np.ascontiguousarray(X), y
        self.settings = dict(C=1.0, max_iter=100, tol=1e-4, solver="lbfgs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _make_estimator(self.cls, **self.settings).fit(self.X[:200], self.y[:200])  # JIT warm-up

    def _fit(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
            return _make_estimator(self.cls, **self.settings).fit(self.X, self.y)

    def time_fit(self, size, peer):
        self._fit()

    def peakmem_fit(self, size, peer):
        self._fit()

    def track_train_log_loss(self, size, peer):
        from sklearn.metrics import log_loss

        est = self._fit()
        return log_loss(self.y, est.predict_proba(self.X))

    track_train_log_loss.unit = "log loss"
