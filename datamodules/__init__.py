"""One LightningDataModule per task, shared readers, and synthetic data generators."""
