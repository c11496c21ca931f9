"""At the next call: choosing, ranking and rendering what Rapport remembers."""
