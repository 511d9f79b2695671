"""The real-time runtime: numpy + OpenCV + an inference backend. Never imports torch (tested)."""
