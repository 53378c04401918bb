"""The processes and their faces: the ``streamrec`` CLI, settings, and thin entry points."""
