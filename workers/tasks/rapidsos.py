"""Tasks that drive rapidsos: placeholder until they are written."""
