//! Detectors as staged candle models, and the ops they share.
