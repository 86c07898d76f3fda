"""avgen: joint audio-video generation with one transformer over video and audio latents."""

__version__ = "0.1.0"
