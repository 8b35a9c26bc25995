"""Data: robust image loading (numpy/Pillow only), dataset indexes, captions and class descriptions."""
