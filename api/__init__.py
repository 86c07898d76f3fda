"""The FastAPI job-queue service (see DESIGN.md)."""
