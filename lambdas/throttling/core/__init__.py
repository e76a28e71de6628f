"""The domain both sides share, stdlib only: names, planning arithmetic and the pure algorithms."""
