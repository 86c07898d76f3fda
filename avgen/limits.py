"""What one generation request may ask for. Plain constants (no torch), so that the API's request schema and
the command line's help read them without loading the model code."""

MAX_SECONDS = 600.0
MAX_STEPS = 1000
MAX_TEXT_CHARS = 20_000
