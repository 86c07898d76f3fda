"""Lip-sync and flicker scoring of any clip, independent of avgen's model code (see DESIGN.md)."""
