"""Plain ``nn.Module`` networks: what gets exported, free of Lightning."""
