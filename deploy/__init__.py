"""onnxruntime predictors and the HTTP inference services."""
