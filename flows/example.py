"""The example pipeline: conflicting pins side by side, a DataFrame hand-off, metrics."""

from components.example import fit_least_squares, make_data, report, six_new, six_old
from conveyor import pipeline


@pipeline
def example(rows: int = 10_000, seed: int = 0):
    """Two steps pin different versions of six; a model is fitted on generated data."""
    data = make_data(rows, seed=seed)
    return report(six_old(), six_new(), fit_least_squares(data))
