"""The frozen open_clip teacher, prompt templates, label packs and the teacher cache."""
