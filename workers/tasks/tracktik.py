"""Tasks that drive tracktik: placeholder until they are written."""
