"""One LightningModule per task; plain exportable networks live in ``nets/``."""
