"""A run's folder and what is made from it: files, retention, plots, report, export."""
