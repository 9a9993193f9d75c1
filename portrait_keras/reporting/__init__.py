"""Reports of a run: training curves, per-task scores, confusion matrices, rank lists.

report.py   write_report(run_dir): report.md and report.html with their figures
plots.py    the matplotlib figures
"""
