"""Fuzzing of scan decoding (``make fuzz``) and the hand-made hostile cases it starts from."""
