"""The referees: simulated third parties that enforce their published limits and count every breach."""
