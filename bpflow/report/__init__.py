"""The run report: figures and tables (:mod:`bpflow.report.figures`) and the
``bpflow report-figures`` step that draws them from a JSON config
(:mod:`bpflow.report.step`)."""
