"""The Memory³ network: config, layers, attention block and transformer."""
