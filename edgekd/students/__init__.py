"""Students: a timm trunk plus a projection head to the teacher's embedding size (open_clip's TimmModel idea)."""
