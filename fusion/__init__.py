"""tumorboard fusion: time-aware cohorts, multimodal encoders and fusion models, training and evaluation."""
