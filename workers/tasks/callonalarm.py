"""Tasks that drive callonalarm: placeholder until they are written."""
