"""Self-supervised pretraining: views, models, matching, losses, methods, training loop."""
