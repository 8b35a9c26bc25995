"""On-device runtime: numpy + one inference backend. Never imports torch or open_clip."""
