"""Ray actors that hold a loaded model and run generation and scoring jobs (see DESIGN.md)."""
