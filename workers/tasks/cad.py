"""Tasks that drive cad: placeholder until they are written."""
