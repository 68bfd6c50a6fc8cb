"""Training settings small enough for a test on two shared CPU cores."""

# A ResNet-18 on 16-pixel images at batch 8 (the engine and app tests); precision is the
# engine's automatic choice.
TINY = {"backbone": "resnet18", "image_size": 16, "cache_size": 20, "batch_size": 8,
        "proj_hidden_dim": 32, "proj_out_dim": 16, "log_every": 1, "num_threads": 2}
