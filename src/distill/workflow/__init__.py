"""The run layer: run directories, their ownership markers and safe replacement (grows with issue 16)."""
