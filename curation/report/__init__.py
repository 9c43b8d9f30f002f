"""The curation report: one self-contained HTML page about a dataset or a pipeline run.

``build_report(source, out)`` renders the funnel of removals, CLIP-score histograms,
sample grids, duplicate groups, raw vs synthetic captions, per-stage throughput, the
forgetting matrix of a continual run and, with ground truth, precision/recall.
"""
from curation.report.build import SECTIONS, build_report
from curation.report.load import ReportError

__all__ = ["build_report", "ReportError", "SECTIONS"]
