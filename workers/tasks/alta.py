"""Tasks that drive alta: placeholder until they are written."""
