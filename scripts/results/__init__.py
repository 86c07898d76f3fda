"""scripts/make_results.py in parts (common, stats, training_log, clips, metrics, acceptance, plots, report, main)."""
