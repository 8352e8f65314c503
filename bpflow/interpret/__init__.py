"""Model interpretation: contribution scores (DeepLIFT / DeepSHAP) and their references."""
